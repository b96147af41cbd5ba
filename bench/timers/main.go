// timers: how late time.AfterFunc callbacks fire.
package main

import (
	"fmt"
	"time"
)

func main() {
	const n = 40
	var total, worst time.Duration
	for i := 0; i < n; i++ {
		done := make(chan time.Duration)
		start := time.Now()
		time.AfterFunc(5*time.Millisecond, func() { done <- time.Since(start) - 5*time.Millisecond })
		late := <-done
		total += late
		if late > worst {
			worst = late
		}
	}
	fmt.Printf("METRIC afterfunc_late_avg_ms %.2f ms\n", float64(total.Microseconds())/1000/n)
	fmt.Printf("METRIC afterfunc_late_max_ms %.2f ms\n", float64(worst.Microseconds())/1000)
}
