module github.com/wristband-m2m-go/wristband-m2m-go/deploy

go 1.26

require github.com/wristband-m2m-go/wristband-m2m-go/pkg v0.0.0

replace github.com/wristband-m2m-go/wristband-m2m-go/pkg => ../pkg
