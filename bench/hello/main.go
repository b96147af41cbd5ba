// hello: startup cost (the runner measures wall time and peak RSS).
package main

import "fmt"

func main() { fmt.Println("hello, world") }
