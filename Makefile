# A thin layer over CMake (as Neovim has): installs what is missing,
# configures, builds, then runs or tests.
#
#   make run     the Jira example pack against the embedded stand-in API
#   make test    the C tests (ctest), every busted spec and luacheck
#   make bench   (see README) figures, not a pass/fail test

BUILD_DIR  ?= build
BUILD_TYPE ?= RelWithDebInfo
CMAKE_FLAGS ?=

# Debian packages the build, the tests and `make run` need.
PACKAGES := cmake gcc make pkg-config liblua5.4-dev lua5.4 \
  libcurl4-openssl-dev libmicrohttpd-dev libjansson-dev lua-cjson \
  lua-busted lua-check curl lua-socket

BUSTED := lua5.4 /usr/bin/busted

.PHONY: all deps configure build run test ctest spec lint clean sanitize

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

build: deps configure
	cmake --build $(BUILD_DIR) -j 2

run: build
	$(BUILD_DIR)/flyte-host dev packs/jira.lua --health-port 0 \
	  --send 'createIssue {"project": "FOO", "ticketText": "Printer on fire"}'

ctest: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure

spec: build
	FLYTE_HOST_BIN=$(abspath $(BUILD_DIR))/flyte-host $(BUSTED)

lint: deps
	luacheck lua packs spec

test: ctest spec lint

sanitize:
	$(MAKE) test BUILD_DIR=build-sanitize BUILD_TYPE=Debug \
	  CMAKE_FLAGS=-DFLYTE_SANITIZE=ON

clean:
	rm -rf $(BUILD_DIR) build-sanitize
