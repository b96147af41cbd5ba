// wasmexport exports Go functions with //go:wasmexport (Go 1.24+) for its host to call directly
// (see crates/gojs/examples/wasmexport.rs, or `gojs call wasmexport.wasm add 40 2`).
package main

//go:wasmexport add
func add(a, b int32) int32 { return a + b }

//go:wasmexport fib
func fib(n int32) int64 {
	a, b := int64(0), int64(1)
	for i := int32(0); i < n; i++ {
		a, b = b, a+b
	}
	return a
}

func main() { select {} }
