module gojs.example

go 1.19
