#!/usr/bin/env bash
# Build kernels/ (libfastgan_kernels.so) with NVIDIA's CUDA 13.0 compiler wheels from PyPI: no system CUDA,
# no GPU. What CI's native lane runs, and what a machine without the CUDA toolkit can use:
#
#   bash tools/build_native.sh            # -> build/libfastgan_kernels.so (+ build/abi_check), then checks it
#
# Steps: a venv (.venv-cuda) with the compiler wheels, cuobjdump, cmake and ninja; CMake configure + build
# for FASTGAN_CUDA_ARCHITECTURES (default 90a;80); kernels/abi_check (the C ABI called from C: on a machine
# without a GPU its launch must come back as a CUDA error); tools/native_check.py on the cubins (SASS for
# every architecture, no spills, shared memory within a block's limit). Logs in build/native-*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
quiet() { "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
python3 -m venv .venv-cuda
# nvidia-nvvm pinned with nvcc: the nvcc wheel does not pin it, and a newer cicc emits PTX the 13.0 ptxas rejects
quiet .venv-cuda/bin/pip install -q "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" nvidia-cuda-cuobjdump cmake ninja
NV=$(.venv-cuda/bin/python -c "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cu13'))")
export PATH="$NV/bin:$PWD/.venv-cuda/bin:$PATH"
mkdir -p build
# the wheels keep the libraries in lib/ where nvcc looks in lib64/: -L says where; cccl's headers need -I
if ! cmake -S . -B build -G Ninja -DCMAKE_CUDA_COMPILER="$NV/bin/nvcc" -DCMAKE_CUDA_FLAGS="-I$NV/include/cccl -L$NV/lib" \
        -DFASTGAN_BUILD_TESTS=ON > build/native-configure.log 2>&1 \
        || ! cmake --build build > build/native-build.log 2>&1; then
    tail -n 40 build/native-configure.log build/native-build.log 2>/dev/null
    echo "native build: FAILED"
    exit 1
fi
grep -c "Used [0-9]* registers" build/native-build.log | sed 's/^/native build: OK, ptxas reports for /; s/$/ kernel builds/'
build/abi_check
python3 tools/native_check.py build/libfastgan_kernels.so --cuobjdump "$NV/bin/cuobjdump" | tail -n 1
python3 tools/native_check.py build/libfastgan_kernels.so --cuobjdump "$NV/bin/cuobjdump" > build/native-check.log || {
    grep -v "^OK" build/native-check.log
    exit 1
}
