// cpu: pure computation; the runner measures wall time, and each part reports its own time:
// hashing and a sieve (cpu_ms), allocating and walking binary trees (alloc_ms: Go's allocator
// and garbage collector), sorting (sort_ms) and map inserts and lookups (map_ms).
package main

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"
)

func metric(name string, start time.Time) {
	fmt.Printf("METRIC %s %.1f ms\n", name, float64(time.Since(start).Microseconds())/1000)
}

type node struct{ left, right *node }

func tree(depth int) *node {
	if depth == 0 {
		return &node{}
	}
	return &node{tree(depth - 1), tree(depth - 1)}
}

func (n *node) count() int {
	if n.left == nil {
		return 1
	}
	return 1 + n.left.count() + n.right.count()
}

type pair struct {
	key  int
	name string
}

func main() {
	start := time.Now()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	var sum [32]byte
	for i := 0; i < 64; i++ {
		sum = sha256.Sum256(append(buf, sum[:]...))
	}
	const n = 5_000_000
	composite := make([]bool, n)
	count := 0
	for i := 2; i < n; i++ {
		if !composite[i] {
			count++
			for j := i * 2; j < n; j += i {
				composite[j] = true
			}
		}
	}
	metric("cpu_ms", start)

	start = time.Now()
	nodes := 0
	for depth := 4; depth <= 14; depth += 2 {
		for i := 0; i < 1<<(14-depth+2); i++ {
			nodes += tree(depth).count()
		}
	}
	metric("alloc_ms", start)

	start = time.Now()
	x := uint32(1)
	next := func() uint32 {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		return x
	}
	ints := make([]int, 500_000)
	for i := range ints {
		ints[i] = int(next())
	}
	slices.Sort(ints)
	pairs := make([]pair, 100_000)
	for i := range pairs {
		v := next()
		pairs[i] = pair{int(v % 1000), strconv.Itoa(int(v))}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].key != pairs[j].key {
			return pairs[i].key < pairs[j].key
		}
		return pairs[i].name < pairs[j].name
	})
	metric("sort_ms", start)

	start = time.Now()
	m := map[string]int{}
	for i := 0; i < 100_000; i++ {
		m["k"+strconv.Itoa(i)] += i
	}
	total := 0
	for i := 0; i < 300_000; i++ {
		total += m["k"+strconv.Itoa(i%100_000)]
	}
	im := map[int]int{}
	for i := 0; i < 500_000; i++ {
		im[i*7%100_003] += i
	}
	metric("map_ms", start)

	fmt.Printf("primes %d digest %x nodes %d sorted %d %s maps %d %d\n",
		count, sum[:4], nodes, ints[1000], pairs[10].name, total, len(im))
}
