#!/usr/bin/env bash
# Builds Horovod (pinned) from its PyPI sdist against the installed torch,
# Gloo only (no MPI, no CUDA), for the `horovod` row of benchmarks/train.py.
#
# As released, 0.28.1 does not build against torch 2.13: its CMake asks for
# C++14 and torch's headers require C++17 (docs/benchmarks.md). The two
# CMAKE_CXX_STANDARD lines are raised to 17; nothing else is changed.
# About 20 minutes on one core; does nothing when Horovod already imports.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VERSION=0.28.1

if $PYTHON -c "import horovod.torch" 2>/dev/null; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$PYTHON -m pip install -q cffi cloudpickle packaging psutil pyyaml
$PYTHON -m pip download -q --no-deps --no-binary :all: "horovod==$VERSION" -d "$work"
tar -xzf "$work/horovod-$VERSION.tar.gz" -C "$work"
src="$work/horovod-$VERSION"
sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
grep -q 'CMAKE_CXX_STANDARD 17' "$src/horovod/torch/CMakeLists.txt"
echo "building horovod $VERSION (Gloo, CPU only; about 20 minutes)"
HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
  HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=GLOO MAKEFLAGS="-j$(nproc)" \
  $PYTHON -m pip install -q --no-build-isolation --no-deps "$src"
$PYTHON -c "import horovod.torch as hvd; print('horovod', hvd.__version__ if hasattr(hvd, '__version__') else '$VERSION', 'ready')"
