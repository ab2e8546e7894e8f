# DualFuse: the two commands a user needs are `make train` and `make test`.
SWIFT    ?= swift
# Numeric code is 10-50x slower unoptimised, so tests build in release with testability on.
RELEASE  := -c release
TESTFLAGS := $(RELEASE) -Xswiftc -enable-testing

.PHONY: deps build test bench clean

deps:
	@tools/install-deps.sh

build: deps
	$(SWIFT) build $(RELEASE)

# Tests share process-wide state (grad mode, thread counts), so they run one at a time;
# each kernel still uses every core.
test: deps
	$(SWIFT) build --build-tests $(TESTFLAGS)
	$(SWIFT) test --skip-build $(TESTFLAGS) --no-parallel

bench: build
	.build/release/bench conv

clean:
	rm -rf .build
