// Package meshv1 is the generated Go code of the controller's distribution
// API (mesh.proto): protoc from Debian's protobuf-compiler, with
// protoc-gen-go and protoc-gen-go-grpc pinned as go tools.
package meshv1

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative mesh.proto"
