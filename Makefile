# heaptrail — the entry point for people and CI. `make help` lists the targets.
# The real build is CMake (CMakeLists.txt, CMakePresets.json); this file installs the Debian
# packages a target needs, then drives the presets. Build folders: build/<preset>.

SHELL := /bin/bash
MAKEFLAGS += --no-print-directory
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

JOBS         ?= 2
PREFIX       ?= /usr/local
CMAKE        ?= cmake
CTEST        ?= ctest
CLANG_FORMAT ?= clang-format

# Debian packages, per target.
DEPS_PKGS   := build-essential cmake pkg-config libunwind-dev libdw-dev python3 sqlite3 git perl procps
BENCH_PKGS  := libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 time heaptrack lttng-tools \
               liblttng-ust1 babeltrace2
FORMAT_PKGS := clang-format

# Sources that clang-format owns.
FORMAT_DIRS  := $(wildcard src include tests examples bench fuzz)
FORMAT_FILES  = $(if $(FORMAT_DIRS),$(shell find $(FORMAT_DIRS) -type f \( -name '*.c' -o -name '*.h' \) | sort))

CTEST_FLAGS := --output-on-failure --no-tests=error -j $(JOBS)

# ThreadSanitizer (gcc 12) cannot run with the high mmap randomization of newer kernels;
# run its tests with ASLR off when this machine allows it.
NO_ASLR := $(shell setarch $$(uname -m) -R true >/dev/null 2>&1 && echo "setarch $$(uname -m) -R")

# $(call apt_install,PACKAGES): installs the PACKAGES that dpkg does not list as installed
# (apt-get update once first); uses sudo only when not root.
define apt_install
if ! command -v dpkg >/dev/null 2>&1; then \
    echo "deps: no dpkg on this machine; make sure these are installed: $(strip $(1))"; \
    exit 0; \
fi; \
missing=""; \
for p in $(1); do \
    st=$$(dpkg -s "$$p" 2>/dev/null || true); \
    case "$$st" in *"Status: install ok installed"*) ;; *) missing="$$missing $$p" ;; esac; \
done; \
if [ -z "$$missing" ]; then echo "deps: installed: $(strip $(1))"; exit 0; fi; \
sudo=""; \
if [ "$$(id -u)" != 0 ]; then \
    command -v sudo >/dev/null 2>&1 || { echo "deps: need root or sudo to install:$$missing" >&2; exit 1; }; \
    sudo=sudo; \
fi; \
echo "deps: installing$$missing"; \
$$sudo apt-get update; \
$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing
endef

# $(call preset_build,PRESET[,EXTRA CMAKE ARGS]): configure and build one preset.
define preset_build
$(CMAKE) --preset $(1) $(2)
$(CMAKE) --build --preset $(1) -j $(JOBS)
endef

.PHONY: help deps bench-deps format-deps build demo check check-format check-sanitize check-debug3 bench \
        install clean format

help:
	@echo "heaptrail — make targets (each installs its Debian packages with apt-get first):"
	@echo "  make demo            release build, example_demo, then record python3 and report it"
	@echo "  make check           Debug build with -Werror, every test (ctest), format check"
	@echo "  make check-sanitize  tests under ASan+UBSan (build/asan) and TSan (build/tsan)"
	@echo "  make check-debug3    the heap's tests with HT_DEBUG=3: whole-heap check after every operation (build/debug3)"
	@echo "  make build           release build (RelWithDebInfo -O2) in build/release"
	@echo "  make bench           release build, then bench/run.sh, run_trace.sh, run_report.sh, run_programs.sh"
	@echo "  make install         release build, then install to PREFIX (now $(PREFIX))"
	@echo "  make format          clang-format -i over the sources"
	@echo "  make check-format    clang-format --dry-run --Werror over the sources"
	@echo "  make deps            install the base packages: $(DEPS_PKGS)"
	@echo "  make bench-deps      install the base and benchmark packages: $(BENCH_PKGS)"
	@echo "  make clean           remove build/"

deps:
	@$(call apt_install,$(DEPS_PKGS))

bench-deps:
	@$(call apt_install,$(DEPS_PKGS) $(BENCH_PKGS))

format-deps:
	@$(call apt_install,$(FORMAT_PKGS))

build: deps
	$(call preset_build,release)

# The demo: a private heap through every path (examples/demo.c), then a real program
# (/usr/bin/python3 on examples/demo.py: not a shim that execs it) recorded under the preload library with 16-frame stacks, and
# the report of its trace.
DEMO_DIR := build/demo
demo: build
	@test -x build/release/example_demo || { echo "demo: build/release/example_demo is missing (examples/demo.c?)" >&2; exit 1; }
	./build/release/example_demo
	@rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	@echo
	@echo "== heaptrail record --stacks=16 -o $(DEMO_DIR)/python3.htr -- /usr/bin/python3 examples/demo.py"
	./build/release/heaptrail record --stacks=16 -o $(DEMO_DIR)/python3.htr -- /usr/bin/python3 examples/demo.py
	@echo
	@echo "== heaptrail report --top 5 $(DEMO_DIR)/python3.htr"
	./build/release/heaptrail report --top 5 $(DEMO_DIR)/python3.htr

check: deps
	$(call preset_build,dev)
	$(CTEST) --test-dir build/dev $(CTEST_FLAGS)
	@$(MAKE) --no-print-directory check-format

check-format:
	@if ! command -v $(CLANG_FORMAT) >/dev/null 2>&1; then \
	    echo "check-format: $(CLANG_FORMAT) not found; skipped (make format-deps installs it)"; \
	    exit 0; \
	fi; \
	files="$(FORMAT_FILES)"; \
	if [ -z "$$files" ]; then echo "check-format: no sources"; exit 0; fi; \
	$(CLANG_FORMAT) --dry-run --Werror $$files; \
	echo "check-format: $$(echo $$files | wc -w) files formatted as .clang-format says"

check-sanitize: deps
	$(call preset_build,asan-ubsan)
	$(CTEST) --test-dir build/asan $(CTEST_FLAGS)
	$(call preset_build,tsan)
	$(NO_ASLR) $(CTEST) --test-dir build/tsan $(CTEST_FLAGS)

# The heap's tests in a HT_DEBUG=3 build (the whole heap is checked after every operation):
# ~3 min on 2 cores, so not part of make check.
DEBUG3_TESTS := ^test_(api|invalid|sources|model|walk_cursor|asan_poison|fork|stress_threads)$$

check-debug3: deps
	$(call preset_build,debug3)
	$(CTEST) --test-dir build/debug3 $(CTEST_FLAGS) -R '$(DEBUG3_TESTS)'

bench: bench-deps
	$(call preset_build,release)
	@test -f bench/run.sh || { echo "bench: bench/run.sh is missing" >&2; exit 1; }
	bash bench/run.sh
	bash bench/run_trace.sh
	build/release/bench_trace_memory
	bash bench/run_report.sh
	bash bench/run_programs.sh

install: deps
	$(call preset_build,release,-DCMAKE_INSTALL_PREFIX=$(PREFIX))
	$(CMAKE) --install build/release --prefix $(PREFIX)

clean:
	rm -rf build

format:
	@command -v $(CLANG_FORMAT) >/dev/null 2>&1 || { echo "format: $(CLANG_FORMAT) not found (make format-deps)" >&2; exit 1; }
	$(if $(FORMAT_FILES),$(CLANG_FORMAT) -i $(FORMAT_FILES))
