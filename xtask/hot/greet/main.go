// greet: hello world's usual variants, for `cargo xtask hot-functions` (the functions it runs
// are compiled before a first run starts, see RATIONALE.md "Why split a module…").
package main

import (
	"fmt"
	"os"
)

func main() {
	name := "World"
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	fmt.Printf("Hello, %s! %d %v\n", name, 42, true)
	fmt.Print("Hello", ", ", name, "\n")
	s := fmt.Sprintf("%s-%d", name, 7)
	println(s)
	fmt.Fprintln(os.Stdout, s)
}
