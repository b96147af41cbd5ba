// fsio: write a 64 MiB file and read it back through os (and so through fs).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

func main() {
	dir, err := os.MkdirTemp("", "gojs-bench")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "big")
	data := make([]byte, 64<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	start := time.Now()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		panic(err)
	}
	w := time.Since(start)
	start = time.Now()
	back, err := os.ReadFile(p)
	if err != nil || len(back) != len(data) {
		panic(err)
	}
	r := time.Since(start)
	fmt.Printf("METRIC fs_write_mibs %.0f MiB/s\n", 64/w.Seconds())
	fmt.Printf("METRIC fs_read_mibs %.0f MiB/s\n", 64/r.Seconds())
	// Many small files: a directory walk.
	start = time.Now()
	for i := 0; i < 500; i++ {
		os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), data[:100], 0o644)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		os.Stat(filepath.Join(dir, e.Name()))
	}
	fmt.Printf("METRIC fs_small_ms %.1f ms\n", float64(time.Since(start).Microseconds())/1000)
}
