#!/usr/bin/env bash
# Run HERE (a machine with network), in the repo root: fills the two ignored folders that a
# device call carries to the offline GPU machine.
#   .cuda-src/llama_cpp_python-0.3.36-trimmed.tar.gz  the sdist without models, docs, tests,
#                                                      tools and other GPU backends (3.5 MB)
#   .cuda-src/whl/                                     pure-Python wheels the GPU machine lacks
# The GPU machine's python3 (3.12) already has numpy, jinja2, MarkupSafe, typing_extensions,
# pyyaml, tqdm, requests, cmake, ninja (KINDS.md); gguf and diskcache are carried, and so are
# scikit-build-core, pathspec and packaging, so the build does not depend on the image's versions.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
VERSION=0.3.36
PY=${PYTHON:-python3}
grep -qxF /.cuda-src/ .git/info/exclude 2>/dev/null || echo /.cuda-src/ >> .git/info/exclude
mkdir -p .cuda-src/whl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work"
tar xzf "$work/llama_cpp_python-$VERSION.tar.gz" -C "$work"
src="$work/llama_cpp_python-$VERSION"
rm -rf "$src"/{.git,docs,examples,tests,docker,scripts,mkdocs.yml,.github}
v="$src/vendor/llama.cpp"
rm -rf "$v"/{.git,.github,.devops,models,docs,examples,tests,media,tools,benches,pocs,gguf-py} \
       "$v"/{scripts,conversion,skills,ci,requirements,app} "$v"/*.py "$v"/build-xcframework.sh
# Backends we never build (ggml only descends into the enabled ones).
for b in sycl opencl vulkan hexagon metal webgpu openvino et cann musa zdnn virtgpu; do
  rm -rf "$v/ggml/src/ggml-$b"
done
tar czf ".cuda-src/llama_cpp_python-$VERSION-trimmed.tar.gz" -C "$work" "llama_cpp_python-$VERSION"

rm -f .cuda-src/whl/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .cuda-src/whl \
  "gguf==0.19.0" "diskcache==5.6.3" "scikit-build-core==0.11.6" "pathspec==0.12.1" "packaging==25.0"
du -sh .cuda-src
ls -l .cuda-src .cuda-src/whl
