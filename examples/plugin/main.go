// plugin is one small module run as many instances (see crates/gojs/examples/plugins.rs):
// each instance publishes `transform`, which reports the instance's own call count.
package main

import (
	"strings"
	"syscall/js"
)

func main() {
	calls := 0
	js.Global().Set("transform", js.FuncOf(func(this js.Value, args []js.Value) interface{} {
		calls++
		return map[string]interface{}{
			"upper": strings.ToUpper(args[0].String()),
			"calls": calls,
		}
	}))
	select {}
}
