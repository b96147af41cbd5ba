// goroutines: ping-pong between two goroutines over unbuffered channels.
package main

import (
	"fmt"
	"time"
)

func main() {
	const n = 500_000
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
	}()
	start := time.Now()
	v := 0
	for i := 0; i < n; i++ {
		ping <- v
		v = <-pong
	}
	close(ping)
	fmt.Printf("METRIC pingpong_ns %.1f ns/op\n", float64(time.Since(start).Nanoseconds())/n)
}
