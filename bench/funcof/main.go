// funcof: Go -> JS -> Go round trips through a js.FuncOf callback.
package main

import (
	"strconv"
	"syscall/js"
	"time"
)

func main() {
	f := js.FuncOf(func(this js.Value, args []js.Value) interface{} { return args[0].Int() + 1 })
	defer f.Release()
	const n = 100_000
	v := 0
	for i := 0; i < n/10; i++ {
		v = f.Invoke(v).Int()
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		v = f.Invoke(v).Int()
	}
	// println writes through runtime.wasmWrite, so the do-nothing floor host can report too.
	ns := float64(time.Since(start).Nanoseconds()) / n
	println("METRIC funcof_ns", strconv.FormatFloat(ns, 'f', 1, 64), "ns/op")
	_ = v
}
