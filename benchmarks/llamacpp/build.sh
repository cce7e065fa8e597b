#!/usr/bin/env bash
# Build llama.cpp (from the llama-cpp-python sdist's vendored copy) and cvec_logits, CPU only,
# into a cache outside the repo. Idempotent: does nothing when the binary already exists
# (FORCE=1 rebuilds). Prints the binary path as the last line of stdout.
#
#   STEERLAB_BENCH_CACHE   cache root (default ~/.cache/steerlab-bench); we use $CACHE/llamacpp
#   LLAMACPP_PY_VERSION    llama-cpp-python sdist to fetch (default 0.3.36)
#   JOBS                   parallel compile jobs (default 2); compiles run under `nice -n 19`
#   PYTHON                 python with pip, for `pip download` (default: repo .venv, else python3)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${STEERLAB_BENCH_CACHE:-$HOME/.cache/steerlab-bench}/llamacpp"
VERSION="${LLAMACPP_PY_VERSION:-0.3.36}"
JOBS="${JOBS:-2}"
SRC="$CACHE/llama_cpp_python-$VERSION"
BUILD="$CACHE/build-$VERSION"
BIN="$BUILD/bin/cvec_logits"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

# Rebuild when cvec_logits.cpp / CMakeLists.txt are newer than the binary.
if [[ -x "$BIN" && -z "${FORCE:-}" && "$BIN" -nt "$HERE/cvec_logits.cpp" && "$BIN" -nt "$HERE/CMakeLists.txt" ]]; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$CACHE"
start=$(date +%s)

if [[ ! -f "$SRC/vendor/llama.cpp/include/llama.h" ]]; then
    tarball="$CACHE/llama_cpp_python-$VERSION.tar.gz"
    if [[ ! -f "$tarball" ]]; then
        echo "fetching llama-cpp-python==$VERSION sdist from PyPI ..." >&2
        "$PYTHON" -m pip download --no-binary :all: --no-deps \
            "llama-cpp-python==$VERSION" -d "$CACHE" >&2
    fi
    echo "unpacking $tarball ..." >&2
    tar -xzf "$tarball" -C "$CACHE"
fi

GEN=()
if [[ ! -f "$BUILD/CMakeCache.txt" ]] && command -v ninja >/dev/null; then GEN=(-G Ninja); fi
echo "configuring in $BUILD ..." >&2
nice -n 19 cmake -S "$HERE" -B "$BUILD" "${GEN[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CPP_DIR="$SRC/vendor/llama.cpp" \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
    -DLLAMA_BUILD_SERVER=OFF >&2

echo "building cvec_logits (nice -n 19, -j$JOBS) ..." >&2
nice -n 19 cmake --build "$BUILD" --target cvec_logits -j "$JOBS" >&2
touch "$BIN"

end=$(date +%s)
echo "build took $((end - start)) s" >&2
echo "$BIN"
