// concurrency: what small programs do with goroutines, for `cargo xtask hot-functions` (the
// functions it runs are compiled before a first run starts, see RATIONALE.md "Why split a
// module…"): goroutines with a WaitGroup, a Mutex, channels buffered and not, select with a
// timeout, time.Sleep, timers and tickers, sync.Once, atomics, a context with a deadline,
// bufio on stdout, flags, math/rand, and os.Exit. It must build with every supported Go (no
// generics packages).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	n := flag.Int("n", 4, "workers")
	name := flag.String("name", "world", "who")
	verbose := flag.Bool("v", false, "verbose")
	flag.Parse()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var total int64
	results := make([]int, *n)
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			mu.Lock()
			results[i] = i * i
			mu.Unlock()
			atomic.AddInt64(&total, int64(i))
		}(i)
	}
	wg.Wait()

	jobs := make(chan int, 8)
	done := make(chan struct{})
	go func() {
		sum := 0
		for j := range jobs {
			sum += j
		}
		fmt.Println("sum", sum)
		close(done)
	}()
	for i := 0; i < 10; i++ {
		jobs <- i
	}
	close(jobs)
	<-done

	ping := make(chan string)
	go func() {
		time.Sleep(time.Millisecond)
		ping <- "pong"
	}()
	select {
	case msg := <-ping:
		fmt.Println(msg)
	case <-time.After(time.Second):
		fmt.Println("timeout")
	}

	var once sync.Once
	for i := 0; i < 2; i++ {
		once.Do(func() { fmt.Println("once") })
	}
	t := time.NewTimer(time.Millisecond)
	<-t.C
	tick := time.NewTicker(time.Millisecond)
	<-tick.C
	tick.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	<-ctx.Done()
	cancel()

	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(w, "hello, %s %v %d %v %d\n", *name, results, atomic.LoadInt64(&total), *verbose, rand.Intn(10))
	w.WriteString(strings.Replace(strings.Title("a b"), " ", "-", -1) + "\n")
	w.Flush()
	os.Exit(0)
}
