#!/usr/bin/env bash
# Build llama-cpp-python 0.3.36 with CUDA for Hopper (sm_90) on an offline GPU machine.
#
#   here:            bash benchmarks/gpu/prepare_carry.sh      # fills the ignored .cuda-src/
#   on the GPU box:  bash benchmarks/gpu/build_cuda.sh [PREFIX] # PREFIX defaults to /tmp/llama-cuda
#                    . PREFIX/env.sh                            # PYTHONPATH + LD_LIBRARY_PATH
#
# Needs python3 with numpy, jinja2, typing_extensions (the GPU image has them), nvcc, cmake,
# ninja and cuBLAS (from the toolkit, or from the nvidia-cublas wheel that PyTorch brings:
# then only its cublas*.h and libcublas* are borrowed, never the wheel's other CUDA headers).
# Writes PREFIX/site (llama_cpp + the carried wheels), PREFIX/env.sh, PREFIX/build.log and
# PREFIX/build.txt (time and sizes). A second run reuses PREFIX/site, or unpacks a build
# carried back as .cuda-src/llama_cpp-cuda.tgz.part-* (see PACK_DIR), instead of compiling.
# PACK_DIR=dir also packs the built llama_cpp (duplicate .so copies turned into links) there,
# split into 15 MiB parts, so it can come back and travel to a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
PREFIX=${1:-/tmp/llama-cuda}
VERSION=0.3.36
PY=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}
ARCH=${CUDA_ARCH:-90}
SITE=$PREFIX/site
mkdir -p "$PREFIX"
log() { echo "[build_cuda $(date +%T)] $*"; }

have_cuda_build() { ls "$SITE"/llama_cpp/lib/libggml-cuda.so* >/dev/null 2>&1; }

# -- the carried pure-Python wheels (gguf, diskcache, scikit-build-core and its needs) ----------
if [ ! -d "$SITE/gguf" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .cuda-src/whl/*.whl
fi
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}

# -- the CUDA toolkit and cuBLAS --------------------------------------------------------------
NVCC=${CUDACXX:-}
for c in ${CUDA_HOME:+$CUDA_HOME/bin/nvcc} /usr/local/cuda/bin/nvcc "$(command -v nvcc || true)"; do
  if [ -z "$NVCC" ] && [ -n "$c" ] && [ -x "$c" ]; then NVCC=$c; fi
done
[ -n "$NVCC" ] || { echo "nvcc not found" >&2; exit 1; }
CUDA_ROOT=$(cd "$(dirname "$NVCC")/.." && pwd)
EXTRA_CMAKE=""
CUBLAS_DIR=""
for d in "$CUDA_ROOT/lib64" "$CUDA_ROOT/lib" "$CUDA_ROOT/targets/x86_64-linux/lib" \
         /usr/lib/x86_64-linux-gnu; do
  if [ -z "$CUBLAS_DIR" ] && ls "$d"/libcublas.so* >/dev/null 2>&1 \
     && ls "$CUDA_ROOT"/include/cublas_v2.h "$CUDA_ROOT"/targets/*/include/cublas_v2.h \
           /usr/include/cublas_v2.h >/dev/null 2>&1; then
    CUBLAS_DIR=$d
  fi
done
if [ -z "$CUBLAS_DIR" ]; then  # borrow cuBLAS from a pip wheel (nvidia-cublas, next to torch)
  roots=$("$PY" -c 'import site, sys; print(" ".join(p for p in {*site.getsitepackages(), *sys.path} if p))')
  lib=$(find $roots -maxdepth 5 -path '*nvidia*' -name 'libcublas.so.*' 2>/dev/null | sort | head -1 || true)
  [ -n "$lib" ] || { echo "cuBLAS not found in the toolkit or in an nvidia-cublas wheel" >&2; exit 1; }
  CUBLAS_DIR=$(dirname "$lib")
  inc=$(find "$(dirname "$CUBLAS_DIR")" -maxdepth 2 -name cublas_v2.h | head -1)
  [ -n "$inc" ] || { echo "cublas_v2.h not found next to $lib" >&2; exit 1; }
  overlay=$PREFIX/cublas-include
  rm -rf "$overlay"; mkdir -p "$overlay"
  ln -s "$(dirname "$inc")"/cublas*.h "$overlay"/
  lt=$(ls "$CUBLAS_DIR"/libcublasLt.so.* | sort | head -1)
  EXTRA_CMAKE="-DCUDA_cublas_LIBRARY=$lib -DCUDA_cublasLt_LIBRARY=$lt -DCMAKE_CUDA_FLAGS=-I$overlay"
  log "cuBLAS borrowed from $CUBLAS_DIR"
fi
# The driver library (VMM memory pools link it): not always where FindCUDAToolkit looks.
libcuda=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so(\.1)? /{ print $NF; exit }')
for d in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64 "$CUDA_ROOT"/lib64/stubs \
         "$CUDA_ROOT"/lib/stubs "$CUDA_ROOT"/targets/x86_64-linux/lib/stubs; do
  [ -n "$libcuda" ] || libcuda=$(ls "$d"/libcuda.so "$d"/libcuda.so.1 2>/dev/null | head -1 || true)
done
if [ -n "$libcuda" ]; then
  EXTRA_CMAKE="$EXTRA_CMAKE -DCUDA_cuda_driver_LIBRARY=$libcuda"
else
  EXTRA_CMAKE="$EXTRA_CMAKE -DGGML_CUDA_NO_VMM=ON"; log "no libcuda found: building without VMM"
fi
cat > "$PREFIX/env.sh" <<ENV
export PYTHONPATH=$SITE\${PYTHONPATH:+:\$PYTHONPATH}
export LD_LIBRARY_PATH=$CUBLAS_DIR:$CUDA_ROOT/lib64\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
ENV

# -- reuse, unpack, or compile ------------------------------------------------------------------
if have_cuda_build; then
  log "reusing the CUDA build in $SITE"
elif ls .cuda-src/llama_cpp-cuda.tgz.part-* >/dev/null 2>&1; then
  log "unpacking the carried CUDA build"
  cat .cuda-src/llama_cpp-cuda.tgz.part-* | tar xzf - -C "$SITE"
else
  log "nvcc $("$NVCC" --version | tail -1); cmake $(cmake --version | head -1); $JOBS jobs; sm_$ARCH"
  rm -rf "$PREFIX/src" "$PREFIX/wheel"
  mkdir -p "$PREFIX/src"
  tar xzf ".cuda-src/llama_cpp_python-$VERSION-trimmed.tar.gz" -C "$PREFIX/src"
  export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$ARCH -DLLAVA_BUILD=OFF \
-DGGML_NATIVE=OFF -DGGML_CUDA_NCCL=OFF -DCMAKE_CUDA_COMPILER=$NVCC $EXTRA_CMAKE"
  export CMAKE_BUILD_PARALLEL_LEVEL=$JOBS
  export SKBUILD_BUILD_DIR=$PREFIX/build  # kept, so a rerun recompiles only what changed
  started=$(date +%s)
  if ! "$PY" -m pip wheel -v --no-index --no-deps --no-build-isolation -w "$PREFIX/wheel" \
       "$PREFIX/src/llama_cpp_python-$VERSION" >"$PREFIX/build.log" 2>&1; then
    grep -E "error" "$PREFIX/build.log" | cut -c1-400 | head -20
    tail -15 "$PREFIX/build.log" | cut -c1-400
    exit 1
  fi
  seconds=$(( $(date +%s) - started ))
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" \
    "$PREFIX"/wheel/llama_cpp_python-*.whl
  {
    echo "build_seconds=$seconds jobs=$JOBS arch=sm_$ARCH"
    echo "wheel_bytes=$(stat -c %s "$PREFIX"/wheel/llama_cpp_python-*.whl)"
    echo "installed_bytes=$(du -sb "$SITE/llama_cpp" | cut -f1)"
    ls -l "$SITE/llama_cpp/lib"
  } > "$PREFIX/build.txt"
  log "built in ${seconds}s"; cat "$PREFIX/build.txt"
fi

if [ -n "${PACK_DIR:-}" ]; then  # one copy of each library, the others as links
  stage=$PREFIX/pack; rm -rf "$stage"; mkdir -p "$stage"
  cp -a "$SITE/llama_cpp" "$stage/"
  for so in "$stage"/llama_cpp/lib/lib*.so; do
    soname=$(ls "$so".[0-9]* 2>/dev/null | awk '{ print length, $0 }' | sort -n | head -1 | cut -d' ' -f2- || true)
    [ -n "$soname" ] || continue
    for copy in "$so" "$so".[0-9]*; do
      [ "$copy" = "$soname" ] || ln -sf "$(basename "$soname")" "$copy"
    done
  done
  mkdir -p "$PACK_DIR"
  tar czf - -C "$stage" llama_cpp | split -b 15M - "$PACK_DIR/llama_cpp-cuda.tgz.part-"
  log "packed: $(du -cb "$PACK_DIR"/llama_cpp-cuda.tgz.part-* | tail -1 | cut -f1) bytes"
fi
