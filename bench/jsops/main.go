// jsops: the cost of single syscall/js operations.
package main

import (
	"strconv"
	"syscall/js"
	"time"
)

func measure(name string, n int, f func()) {
	for i := 0; i < n/10; i++ { // warm up
		f()
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		f()
	}
	// println writes through runtime.wasmWrite, so the do-nothing floor host can report too.
	ns := float64(time.Since(start).Nanoseconds()) / float64(n)
	println("METRIC", name, strconv.FormatFloat(ns, 'f', 1, 64), "ns/op")
}

func main() {
	g := js.Global()
	obj := g.Get("Object").New()
	obj.Set("num", 42)
	obj.Set("str", "hello")
	math := g.Get("Math")
	arr := g.Get("Uint8Array").New(1024)
	buf := make([]byte, 1024)
	var sink float64
	measure("get_number_ns", 200_000, func() { sink += obj.Get("num").Float() })
	measure("get_object_ns", 200_000, func() { _ = g.Get("Math") })
	measure("get_string_ns", 200_000, func() { _ = obj.Get("str").String() })
	measure("call_number_ns", 200_000, func() { sink += math.Call("abs", -1.5).Float() })
	measure("set_number_ns", 200_000, func() { obj.Set("num", 7) })
	measure("set_string_ns", 200_000, func() { obj.Set("str", "hello") })
	measure("copy_1k_ns", 100_000, func() { js.CopyBytesToJS(arr, buf) })
	object := g.Get("Object")
	measure("new_object_ns", 200_000, func() { _ = object.New() })
	// Operations that pass no string (wasm_exec.js decodes none for them).
	array := g.Get("Array")
	seven := array.New(1, 2, 3, 4, 5, 6, 7)
	abs := math.Get("abs")
	measure("index_number_ns", 200_000, func() { sink += seven.Index(5).Float() })
	measure("length_ns", 200_000, func() { sink += float64(seven.Length()) })
	measure("set_index_ns", 200_000, func() { seven.SetIndex(5, 7) })
	measure("invoke_number_ns", 200_000, func() { sink += abs.Invoke(-2).Float() })
	measure("instanceof_ns", 200_000, func() {
		if seven.InstanceOf(array) {
			sink++
		}
	})
	_ = sink
}
