// Command hello is gojs's bundled example: Go printing, calling into the JS realm, and a
// js.FuncOf callback invoked from JS, then a timer.
package main

import (
	"fmt"
	"os"
	"syscall/js"
	"time"
)

func main() {
	name := "gopher"
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	fmt.Printf("Hello, %s! (JS host: %s)\n", name, js.Global().Get("process").Get("argv0"))

	// A Go function called by JavaScript.
	double := js.FuncOf(func(this js.Value, args []js.Value) interface{} {
		return args[0].Int() * 2
	})
	defer double.Release()
	js.Global().Set("double", double)
	sum := js.Global().Call("eval", "[1, 2, 3].map(double).reduce((a, b) => a + b)")
	fmt.Println("JS mapped Go's double over [1, 2, 3]:", sum.Int())

	start := time.Now()
	time.Sleep(20 * time.Millisecond)
	fmt.Println("slept at least 20ms:", time.Since(start) >= 20*time.Millisecond)
}
