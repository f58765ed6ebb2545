# Warren's build. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
CMDS := $(notdir $(wildcard cmd/*))
export CGO_ENABLED ?= 0

.PHONY: help deps build generate generate-check test test-unit test-root fuzz e2e demo demo-down bench lint clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

deps: ## install the Debian packages builds and tests need (idempotent)
	@hack/deps.sh

build: ## build every cmd/ binary, static, into bin/
# grpcnotrace keeps gRPC from linking golang.org/x/net/trace (unused: no EnableTracing, no
# /debug/requests) and with it text/template's reflection, which keeps every exported method
# alive: the ztunnel's binary, and so its resident text, shrinks by 3 MB (issue #4).
	@mkdir -p $(BIN)
	@if [ -n "$(CMDS)" ]; then $(GO) build -trimpath -tags grpcnotrace -ldflags '-s -w' -o $(BIN)/ $(addprefix ./cmd/,$(CMDS)); fi

generate: ## regenerate committed code (bpf2go, controller-gen, protobuf)
	$(GO) generate ./...

generate-check: generate ## fail if regenerating changes anything committed
	@git diff --exit-code --stat -- . ':!go.sum' || { echo "generated code is stale: run make generate and commit"; exit 1; }

lint: ## go vet, staticcheck (pinned with go tool), and a doc comment on every package
	@missing=$$($(GO) list -f '{{if not .Doc}}{{.ImportPath}}{{end}}' ./... | grep -v '^$$' || true); \
	  if [ -n "$$missing" ]; then echo "packages without a package doc comment:"; echo "$$missing"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/...
	$(GO) tool staticcheck ./...
	$(GO) tool staticcheck -tags e2e ./test/e2e/...

test-unit: ## unit tests; no root needed (kernel tests skip)
	$(GO) test -short -count=1 ./...

test-root: deps ## every package's tests, the kernel ones included (root)
	$(GO) test -count=1 -timeout 20m ./...

fuzz: ## run every fuzz target briefly (FUZZTIME, default 8s each)
	@hack/fuzz.sh

e2e: deps ## end-to-end tests on the local cluster (brings it up, or reuses a running one)
	$(GO) test -tags e2e -count=1 -timeout 50m -v ./test/e2e/...

test: deps lint generate-check test-root fuzz e2e ## everything CI runs

demo: deps ## bring up the local cluster, deploy the demo workload, drive traffic, show the result
	hack/demo/run.sh

demo-down: ## remove the demo and the local cluster
	$(GO) run ./hack/cluster down

bench: deps ## benchmarks: Warren vs the direct path and an HAProxy pair, results in bench/results
	$(GO) run ./test/bench

clean: ## remove build output (not the cluster's binary cache)
	rm -rf $(BIN)
