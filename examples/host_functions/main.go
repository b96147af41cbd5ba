// host_functions calls functions its Rust host provides (see crates/gojs/examples/host_functions.rs):
// a checksum over bytes Go sends, and a buffer of bytes the host sends back.
package main

import (
	"fmt"
	"syscall/js"
)

func main() {
	g := js.Global()
	data := []byte("hello from Go")
	arr := g.Get("Uint8Array").New(len(data))
	js.CopyBytesToJS(arr, data)
	fmt.Println("host checksum:", g.Call("checksum", arr).Int())

	blob := g.Call("makeBlob", 8)
	buf := make([]byte, blob.Length())
	js.CopyBytesToGo(buf, blob)
	fmt.Println("host blob:", buf)

	defer func() {
		if r := recover(); r != nil {
			fmt.Println("host refused:", r.(js.Error).Get("message").String())
		}
	}()
	g.Call("makeBlob", -1)
}
