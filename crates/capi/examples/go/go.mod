module example.invalid/delta-go-example

go 1.19
