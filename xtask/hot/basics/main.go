// basics: what small programs other than hello world commonly do first, for `cargo xtask
// hot-functions` (the functions it runs are compiled before a first run starts, see
// RATIONALE.md "Why split a module…"): log, writes to os.Stdout, strings, strconv, errors,
// time, sort, maps, structs printed with %v and %+v, environment variables. It must build with
// every supported Go (no generics packages).
package main

import (
	"errors"
	"fmt"
	"log"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

type point struct {
	X, Y int
	Name string
}

func main() {
	start := time.Now()
	log.Println("starting")
	log.Printf("args: %d", len(os.Args))
	os.Stdout.WriteString("plain write\n")
	os.Stdout.Write([]byte("bytes write\n"))
	words := strings.Fields("the quick brown fox")
	sort.Strings(words)
	fmt.Println(strings.Join(words, ","), strings.ToUpper(words[0]), strings.Repeat("ab", 3))
	fmt.Println(strings.Split("a,b,c", ","), strings.Contains("hello", "ell"), strings.TrimSpace("  x "))
	var b strings.Builder
	for i := 0; i < 3; i++ {
		b.WriteString(strconv.Itoa(i))
	}
	n, err := strconv.Atoi(b.String())
	fmt.Println(n, err, strconv.FormatFloat(math.Sqrt(2), 'f', 3, 64), strconv.Quote("q"))
	base := errors.New("base")
	wrapped := fmt.Errorf("wrapped: %w", base)
	fmt.Println(wrapped, errors.Is(wrapped, base))
	nums := []int{5, 2, 9, 1}
	sort.Ints(nums)
	m := map[string]int{"a": 1, "b": 2}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	p := point{1, 2, "p"}
	fmt.Printf("%v %+v %v %v %.2f %x %q\n", nums, p, keys, m, 3.14159, 255, "s")
	fmt.Println(os.Getenv("HOME") != "", time.Duration(1500)*time.Millisecond)
	if _, err := os.Open("/no/such/file"); err != nil {
		fmt.Println("open failed")
	}
	fmt.Fprintf(os.Stderr, "took %v\n", time.Since(start) > 0)
}
