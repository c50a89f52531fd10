module github.com/arrayfs/arrayfs

go 1.26.8

require (
	github.com/hanwen/go-fuse/v2 v2.12.1
	golang.org/x/sys v0.49.0
	gopkg.in/yaml.v3 v3.0.1
)

require google.golang.org/protobuf v1.36.12 // indirect
