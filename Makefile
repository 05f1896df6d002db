# make test  - set up everything on a fresh machine, build, run C++ and Python tests
# make demo  - set up, build, train with torch DDP and bagua algorithms, print a table, write a plot
# Every target is idempotent: what is already installed or built is checked, not redone.

PYTHON      ?= python3
PYEXE       := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null)
TORCH_VER   := 2.13.0
APT_PKGS    := cmake ninja-build g++ libgtest-dev libfmt-dev iproute2 clang libclang-rt-14-dev
PY_PKGS     := pytest numpy matplotlib tqdm
BUILD_CORE  := build/core
JOBS        ?= $(shell nproc)
WORLD_SIZE  ?= 4
OUT         ?= out
FUZZ_SECONDS ?= 15
FUZZ_CODECS := identity fp16 bf16 minmax_uint8 sign1bit

.PHONY: all deps build cpp-test py-test test demo bench horovod fuzz fuzz-build clean

all: build

deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# Pinned: an unpinned torch would pull several GB of CUDA packages.
	@$(PYTHON) -c "import torch,sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VER)')" 2>/dev/null || \
	  $(PYTHON) -m pip install -q torch==$(TORCH_VER)
	@missing=""; for p in $(PY_PKGS); do $(PYTHON) -c "import $$p" 2>/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing Python packages:$$missing"; $(PYTHON) -m pip install -q $$missing; fi

# The extension is built by setup.py (CMake under the hood) in place; the
# editable install makes `import bagua_ravnest` work from anywhere.
build: deps
	@(cd / && $(PYTHON) -c "import sys, importlib.util as u; s = u.find_spec('bagua_ravnest'); \
	  sys.exit(s is None or s.submodule_search_locations[0] != '$(CURDIR)/bagua_ravnest')" 2>/dev/null) || \
	  $(PYTHON) -m pip install -q --no-build-isolation --no-deps -e .
	@[ -f build/ext/build.ninja ] || cmake -S . -B build/ext -G Ninja -DBAGUA_BUILD_TESTS=OFF \
	  -DPython3_EXECUTABLE=$(PYEXE) >/dev/null
	@cmake --build build/ext -j $(JOBS)
	@[ -f $(BUILD_CORE)/build.ninja ] || cmake -S . -B $(BUILD_CORE) -G Ninja -DBAGUA_BUILD_EXTENSION=OFF >/dev/null
	@cmake --build $(BUILD_CORE) -j $(JOBS)

cpp-test: build
	$(BUILD_CORE)/bagua_cpp_tests --gtest_brief=1

py-test: build
	$(PYTHON) -m pytest tests/python -q -ra

test: cpp-test py-test fuzz

# libFuzzer targets of the codec decoders (clang, ASan + UBSan), then a run of
# FUZZ_SECONDS each; a crash or sanitizer report fails the target and keeps
# the log and the crashing input under build/fuzz.
fuzz-build: deps
	@[ -f build/fuzz/build.ninja ] || CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBAGUA_BUILD_TESTS=OFF -DBAGUA_BUILD_EXTENSION=OFF \
	  -DBAGUA_BUILD_FUZZERS=ON -DBAGUA_CUDA=OFF >/dev/null
	@cmake --build build/fuzz -j $(JOBS) --target $(addprefix fuzz_decode_,$(FUZZ_CODECS))

fuzz: fuzz-build
	@for c in $(FUZZ_CODECS); do \
	  mkdir -p build/fuzz/corpus/$$c build/fuzz/crashes; \
	  printf 'fuzzing the %s decoder for %s s: ' $$c $(FUZZ_SECONDS); \
	  build/fuzz/fuzz_decode_$$c -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=build/fuzz/crashes/$$c- \
	    build/fuzz/corpus/$$c > build/fuzz/$$c.log 2>&1 || { echo FAILED; tail -40 build/fuzz/$$c.log; exit 1; }; \
	  grep -o 'Done [0-9]* runs' build/fuzz/$$c.log || echo ok; \
	done

demo: build
	$(PYTHON) benchmarks/demo.py --world-size $(WORLD_SIZE) --out $(OUT)

# The standard slow-network matrix (needs root; up to ~30 minutes); rewrites the
# generated part of docs/benchmarks.md and docs/img/.
bench: build
	$(PYTHON) benchmarks/bench.py

# Horovod (pinned, Gloo only) for the `horovod` rows of make bench: a patched
# build from the PyPI sdist, about 20 minutes once (docs/benchmarks.md).
horovod: deps
	PYTHON=$(PYTHON) benchmarks/install_horovod.sh

clean:
	rm -rf build bagua_ravnest/_C*.so *.egg-info
