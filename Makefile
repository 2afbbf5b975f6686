# A thin layer over CMake (as Neovim has): installs what is missing,
# configures, builds, then runs or tests.
#
#   make run     the Jira example pack against the embedded stand-in API
#   make test    the C tests (ctest), every busted spec and luacheck
#   make sanitize  the same tests on an ASan+UBSan build (build-sanitize)
#   make fuzz    each libFuzzer target for FUZZ_SECONDS (build-fuzz, clang)
#   make bench   (see README) figures, not a pass/fail test

BUILD_DIR  ?= build
BUILD_TYPE ?= RelWithDebInfo
CMAKE_FLAGS ?=

# Debian packages the build, the tests and `make run` need.
PACKAGES := cmake gcc make pkg-config liblua5.4-dev lua5.4 \
  libcurl4-openssl-dev libmicrohttpd-dev libjansson-dev lua-cjson \
  lua-busted lua-check curl lua-socket valgrind

# What `make fuzz` needs on top: clang and its libFuzzer runtime.
FUZZ_PACKAGES := clang libclang-rt-14-dev

BUSTED := lua5.4 /usr/bin/busted

# What `make bench` needs on top: wrk (the stand-in's own capacity), GNU
# time (wrk's CPU) and strace (idle wake-ups). Kept apart so that `make
# test` does not need them.
BENCH_PACKAGES := wrk strace time
BENCH_DIR := build-release

# Extra environment for the specs.
SPEC_ENV ?=

.PHONY: all deps configure build run test ctest spec lint clean sanitize fuzz

all: build

deps:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" \
	    || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(BUILD_DIR)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)

configure: $(BUILD_DIR)/CMakeCache.txt

# make's "Entering directory" lines from CMake's own makefiles say nothing
# a person needs: --no-print-directory for those (an empty MAKEFLAGS so
# that the jobserver of an outer make does not leak in)
build: deps configure
	@MAKEFLAGS= cmake --build $(BUILD_DIR) -j 2 -- --no-print-directory

run: build
	$(BUILD_DIR)/flyte-host dev packs/jira.lua --health-port 0 \
	  --send 'createIssue {"project": "FOO", "ticketText": "Printer on fire"}'

ctest: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure

# What the browser spec (spec/host/devpage_spec.lua) needs on top: Debian's
# chromium, and playwright-core from spec/browser/package-lock.json (npm ci,
# once). node and npm come with the machine; without them that spec is
# pending and says so.
BROWSER_PACKAGES := chromium
PLAYWRIGHT := spec/browser/node_modules/playwright-core/package.json

.PHONY: browser-deps
browser-deps:
	@$(MAKE) --no-print-directory deps \
	  PACKAGES="$(PACKAGES) $(BROWSER_PACKAGES)"
	@if [ ! -f $(PLAYWRIGHT) ]; then \
	  if command -v npm >/dev/null 2>&1; then \
	    echo "npm ci in spec/browser"; \
	    cd spec/browser && npm ci --no-audit --no-fund; \
	  else \
	    echo "npm not found: the browser spec will be pending"; \
	  fi; \
	fi

spec: build browser-deps
	FLYTE_HOST_BIN=$(abspath $(BUILD_DIR))/flyte-host $(SPEC_ENV) \
	  $(BUSTED) --cpath='$(BUILD_DIR)/?.so'

lint: deps
	luacheck lua packs spec bench

test: ctest spec lint

# The specs, and any lua5.4 they start, run under a lua5.4 linked with the
# ASan runtime, so that it can load the sanitized flyte/core.so
# (host/test/lua_sanitized.c). The specs keep flyte-host's output in
# temporary files, so sanitizer reports go to build-sanitize/sanitizer/
# (log_path) and any report there is a failure; the rest (UBSan's in
# flyte/core.so, the C tests') show in the output. Leak checks are on, and
# a UBSan finding stops the program.
SAN_DIR := build-sanitize
SAN_LOGS := $(abspath $(SAN_DIR))/sanitizer

sanitize:
	rm -rf $(SAN_LOGS) && mkdir -p $(SAN_LOGS)
	@$(MAKE) test BUILD_DIR=$(SAN_DIR) BUILD_TYPE=Debug \
	  CMAKE_FLAGS=-DFLYTE_SANITIZE=ON \
	  SPEC_ENV="PATH=$(abspath $(SAN_DIR))/lua-bin:$$PATH \
	    ASAN_OPTIONS=log_path=$(SAN_LOGS)/asan \
	    UBSAN_OPTIONS=print_stacktrace=1:log_path=$(SAN_LOGS)/ubsan"; \
	rc=$$?; \
	for f in $(SAN_LOGS)/*; do \
	  [ -f "$$f" ] || continue; echo "--- $$f"; cat "$$f"; rc=1; \
	done; \
	exit $$rc

# Each fuzzer runs on its corpus in host/fuzz/corpus, read only; what it
# finds goes to build-fuzz/corpus, and a crashing input to build-fuzz/.
FUZZ_SECONDS ?= 60
FUZZ_FLAGS ?=
FUZZERS := json api journal

fuzz:
	@$(MAKE) deps PACKAGES="$(PACKAGES) $(FUZZ_PACKAGES)"
	cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLYTE_FUZZ=ON
	cmake --build build-fuzz -j 2 --target $(FUZZERS:%=fuzz_%)
	@rc=0; for f in $(FUZZERS); do \
	  mkdir -p build-fuzz/corpus/$$f; \
	  echo "fuzz_$$f: $(FUZZ_SECONDS) s"; \
	  ./build-fuzz/host/fuzz/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) \
	    -timeout=10 -dict=host/fuzz/$$f.dict -print_final_stats=1 $(FUZZ_FLAGS) \
	    -artifact_prefix=build-fuzz/fuzz_$$f- \
	    build-fuzz/corpus/$$f host/fuzz/corpus/$$f \
	    >build-fuzz/fuzz_$$f.log 2>&1 \
	    || { rc=1; tail -n 60 build-fuzz/fuzz_$$f.log; }; \
	  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units)' \
	    build-fuzz/fuzz_$$f.log || true; \
	done; exit $$rc

.PHONY: bench bench-deps

bench-deps:
	@$(MAKE) --no-print-directory deps PACKAGES="$(PACKAGES) $(BENCH_PACKAGES)"

# A Release build of its own, and one of BENCH_BASE (the previous commit
# unless given: `make bench BENCH_BASE=v0.1.0`) to bench beside it in the
# same run; then bench/bench.lua prints a table and writes
# $(BENCH_DIR)/bench.json.
BENCH_BASE ?= HEAD~1
PREV_DIR := build-prev

bench: bench-deps
	cmake -S . -B $(BENCH_DIR) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BENCH_DIR) -j 2
	@if git rev-parse --verify -q '$(BENCH_BASE)^{commit}' >/dev/null; then \
	  rm -rf $(PREV_DIR)/src && mkdir -p $(PREV_DIR)/src && \
	  git archive '$(BENCH_BASE)' | tar -x -C $(PREV_DIR)/src && \
	  cmake -S $(PREV_DIR)/src -B $(PREV_DIR)/build \
	    -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	  cmake --build $(PREV_DIR)/build -j 2 --target flyte-host >/dev/null; \
	else echo "bench: no commit $(BENCH_BASE): no previous binary"; fi
	env FLYTE_HOST_BIN=$(BENCH_DIR)/flyte-host \
	  $$( [ -x $(PREV_DIR)/build/flyte-host ] && \
	      echo FLYTE_PREV_BIN=$(abspath $(PREV_DIR))/build/flyte-host ) \
	  lua5.4 bench/bench.lua

clean:
	rm -rf $(BUILD_DIR) build-sanitize build-fuzz $(BENCH_DIR) $(PREV_DIR)
