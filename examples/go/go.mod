module example.com/graceful-run-go

go 1.19
