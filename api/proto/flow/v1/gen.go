// Package flowv1 is the node agent's flow stream API (flow.proto), which
// warrenctl observe reads: the generated Go code (protoc from Debian's
// protobuf-compiler, protoc-gen-go and protoc-gen-go-grpc pinned as go
// tools), and the one filter both ends apply (filter.go).
package flowv1

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative flow.proto"
