module gojs.bench

go 1.21
