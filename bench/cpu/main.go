// cpu: pure computation (hashing and a sieve); the runner measures wall time.
package main

import (
	"crypto/sha256"
	"fmt"
	"time"
)

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
	fmt.Printf("METRIC cpu_ms %.1f ms\n", float64(time.Since(start).Microseconds())/1000)
	fmt.Printf("primes %d digest %x\n", count, sum[:4])
}
