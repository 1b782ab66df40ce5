module github.com/wristband-m2m-go/wristband-m2m-go/interop

go 1.26
