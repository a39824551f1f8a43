#!/usr/bin/env bash
# Fill .gpu/ (git-ignored; carry it to the device) with what benchmarks/gpu_speed.sh needs on a GPU machine that has no
# network: the llama.cpp source that the installed llama-cpp-python vendors (from its sdist, less
# the vocab files, docs and tests), Python 3.12 wheels of llm and the packages the device image
# lacks, this project's wheel, and llama-cpp-python's Python files (its libraries are built there).
#   bash benchmarks/gpu_prepare.sh [SDIST]    (run in the project's venv, from the repo root)
set -eu
VER=$(python -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))')
SDIST=${1:-.vendor/llama_cpp_python-$VER.tar.gz}
[ -f "$SDIST" ] || python -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VER" -d .vendor
rm -rf .gpu && mkdir -p .gpu/whl .gpu/llama_py/llama_cpp
TMP=$(mktemp -d) && trap 'rm -rf "$TMP"' EXIT
tar -xzf "$SDIST" -C "$TMP" "llama_cpp_python-$VER/vendor/llama.cpp"
tar -cJf .gpu/llama.cpp-src.tar.xz -C "$TMP/llama_cpp_python-$VER/vendor" \
    --exclude=llama.cpp/models --exclude=llama.cpp/docs --exclude=llama.cpp/media --exclude=llama.cpp/tests \
    --exclude=llama.cpp/examples --exclude=llama.cpp/benches --exclude=llama.cpp/gguf-py \
    --exclude=llama.cpp/conversion llama.cpp
pins=$(python -m pip list --format=freeze | grep -i -E '^(llm|openai|httpx2|httpcore2|truststore|pydantic|pydantic.core|annotated.types|typing.inspection|typing.extensions|jiter|sniffio|sqlite.utils|sqlite.fts4|click|click.default.group|condense.json|puremagic|python.ulid|gguf|diskcache)==')
python -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .gpu/whl $pins
python -m pip wheel -q --no-deps --no-build-isolation -w .gpu/whl .
SP=$(python -c 'import llama_cpp, os; print(os.path.dirname(os.path.dirname(llama_cpp.__file__)))')
cp "$SP"/llama_cpp/*.py "$SP/llama_cpp/py.typed" .gpu/llama_py/llama_cpp/
cp -r "$SP/llama_cpp_python-$VER.dist-info" .gpu/llama_py/
rm -f .gpu/llama_py/llama_cpp_python-"$VER".dist-info/{RECORD,direct_url.json}
du -sh .gpu
