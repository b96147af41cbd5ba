// greeter publishes a Go function to its host and waits to be called: run it with
// `cargo run --release --example greeter` (Rust calls it) or
// `gojs call greeter.wasm greeter '"gopher"'`.
package main

import (
	"fmt"
	"syscall/js"
)

func greeter(this js.Value, args []js.Value) interface{} {
	name := args[0].String()
	fmt.Println("Hello", name)
	return name
}

func main() {
	js.Global().Set("greeter", js.FuncOf(greeter))
	select {}
}
