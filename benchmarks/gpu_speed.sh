#!/usr/bin/env bash
# Generation speed on a lent GPU, CUDA builds on both sides (issue 16's GPU comparison).
#
# One CUDA build of the llama.cpp that llama-cpp-python vendors gives both sides: llama.cpp's own
# `llama-completion` / `llama-bench`, and the libllama that llama-cpp-python loads for us
# (LLAMA_CPP_LIB_PATH), so both run the very same kernels. Then benchmarks/speed.py's generation
# section runs with every layer offloaded (-ngl 999 / -o gpu_layers -1), interleaved.
#
# The GPU machine has no network: everything it needs travels in .gpu/ (git-ignored), made here by
#   bash benchmarks/gpu_prepare.sh
# Then on the GPU machine, from the repo root with .gpu/ carried there:  bash benchmarks/gpu_speed.sh
# Results land in $OUT (speed logs and the new results.jsonl lines), as the tool brings them back.
set -u
T0=$(date +%s)
OUT=${OUT:-/tmp/gpu-out}
WORK=${GPU_WORK:-/tmp/gpu-work}
export LLAMA_CPP_LIB_PATH="$WORK/build/bin"  # llama-cpp-python loads our CUDA build
REPEATS=${REPEATS:-5}
TOKENS=${TOKENS:-256}  # a GPU token takes ~1 ms: more of them than on the CPU, for a steadier rate
BIG_LAYERS=${BIG_LAYERS:-16}          # the realistic-depth model, only if time is left
BIG_START_BEFORE=${BIG_START_BEFORE:-360}  # seconds into the run
mkdir -p "$OUT" "$WORK"
log() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/steps.txt"; }

nvidia-smi --query-gpu=name,driver_version,memory.used,clocks.sm --format=csv | tee "$OUT/gpu.txt"
grep -m1 'model name' /proc/cpuinfo | tee -a "$OUT/gpu.txt"
nproc | tee -a "$OUT/gpu.txt"

if [ -d .gpu/whl ]; then  # the device image lacks llm and friends: install the carried wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
    cp -r .gpu/llama_py/. /tmp/site/
    # Two clashes seen on the lent H200's image (2026-11-30), not elsewhere: with its numpy (2.5.2)
    # loaded before the CUDA ggml libraries, llama_model_load_from_file segfaulted (llm imports
    # numpy long before a plugin loads a model); and pandas' pyarrow, which sqlite-utils imports
    # when present, aborted ("free(): invalid pointer") when loaded after them. So every Python
    # process here loads llama_cpp first (sitecustomize) and sees no pandas.
    mkdir -p /tmp/preload/pandas
    echo 'import llama_cpp  # before numpy: see benchmarks/gpu_speed.sh' > /tmp/preload/sitecustomize.py
    echo 'raise ImportError("hidden by benchmarks/gpu_speed.sh")' > /tmp/preload/pandas/__init__.py
    export PYTHONPATH=/tmp/preload:/tmp/site PATH=/tmp/site/bin:$PATH
fi
log "packages installed"

tar -xJf .gpu/llama.cpp-src.tar.xz -C "$WORK" || exit 1
CUDA_FLAGS=""
[ "${NO_CUDA:-}" ] || CUDA_FLAGS="-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF"
# GGML_CUDA_FA=OFF: the flash-attention kernels would double the build; without them both sides
# run attention the same (non-FA) way
cmake -S "$WORK/llama.cpp" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF $CUDA_FLAGS \
    > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
log "configured"
cmake --build "$WORK/build" --target llama-completion llama-bench -j "$(nproc)" >> "$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; exit 1; }
log "built: $(ls "$WORK/build/bin" | tr '\n' ' ')"
python3 -c 'import llama_cpp; print("gpu offload:", llama_cpp.llama_supports_gpu_offload())' 2>&1 | tee -a "$OUT/steps.txt"

NEW=$(( $(wc -l < benchmarks/results.jsonl) + 1 ))
GPU_LAYERS=${GPU_LAYERS:--1}
PYTHONUNBUFFERED=1 python3 benchmarks/speed.py --only generation --bins "$WORK/build/bin" --gpu-layers "$GPU_LAYERS" \
    --repeats "$REPEATS" --tokens "$TOKENS" --workdir "$WORK/bench" 2>&1 | tee "$OUT/speed-4-layers.txt"
tail -n +"$NEW" benchmarks/results.jsonl > "$OUT/results-new.jsonl"
log "4-layer models done"

if [ $(( $(date +%s) - T0 )) -lt "$BIG_START_BEFORE" ]; then
    PYTHONUNBUFFERED=1 python3 benchmarks/speed.py --only generation --bins "$WORK/build/bin" --gpu-layers "$GPU_LAYERS" \
        --repeats 3 --tokens "$TOKENS" --layers "$BIG_LAYERS" --widths 3072 --workdir "$WORK/bench" 2>&1 | tee "$OUT/speed-big.txt"
    tail -n +"$NEW" benchmarks/results.jsonl > "$OUT/results-new.jsonl"
    log "$BIG_LAYERS-layer model done"
else
    log "no time left for the $BIG_LAYERS-layer model"
fi
