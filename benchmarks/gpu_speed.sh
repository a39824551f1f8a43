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
OUT=${OUT:-$(mktemp -d)}
WORK=${GPU_WORK:-$(mktemp -d)}
REPEATS=${REPEATS:-5}
TOKENS=${TOKENS:-256}  # a GPU token takes ~1 ms: more of them than on the CPU, for a steadier rate
BIG_LAYERS=${BIG_LAYERS:-16}          # the realistic-depth model, only if time is left
BIG_START_BEFORE=${BIG_START_BEFORE:-360}  # seconds into the run
GPU_LAYERS=${GPU_LAYERS:--1}
mkdir -p "$OUT" "$WORK"
log() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/steps.txt"; }
. benchmarks/gpu_env.sh

nvidia-smi --query-gpu=name,driver_version,memory.used,clocks.sm --format=csv | tee "$OUT/gpu.txt"
grep -m1 'model name' /proc/cpuinfo | tee -a "$OUT/gpu.txt"
nproc | tee -a "$OUT/gpu.txt"

CUDA=(--cuda --cuda-arch 90)
[ "${NO_CUDA:-}" ] && CUDA=()
gpu_setup "${CUDA[@]}" > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
log "built: $(ls "$BIN" | tr '\n' ' ')"
# Two clashes seen on the lent H200's image (2026-11-30), not elsewhere: with its numpy (2.5.2)
# loaded before the CUDA ggml libraries, llama_model_load_from_file segfaulted (llm imports numpy
# long before a plugin loads a model); and pandas' pyarrow, which sqlite-utils imports when
# present, aborted ("free(): invalid pointer") when loaded after them. So every Python process
# here loads llama_cpp first (sitecustomize) and sees no pandas.
mkdir -p "$WORK/preload/pandas"
echo 'import llama_cpp  # before numpy: see benchmarks/gpu_speed.sh' > "$WORK/preload/sitecustomize.py"
echo 'raise ImportError("hidden by benchmarks/gpu_speed.sh")' > "$WORK/preload/pandas/__init__.py"
export PYTHONPATH="$WORK/preload${PYTHONPATH:+:$PYTHONPATH}"
python3 -c 'import llama_cpp; print("gpu offload:", llama_cpp.llama_supports_gpu_offload())' 2>&1 | tee -a "$OUT/steps.txt"

NEW=$(( $(wc -l < benchmarks/results.jsonl) + 1 ))
bench() {  # bench LOG [speed.py arguments]: generation on both sides, every layer offloaded
    local log_file=$1; shift
    PYTHONUNBUFFERED=1 python3 benchmarks/speed.py --only generation --bins "$BIN" --gpu-layers "$GPU_LAYERS" \
        --tokens "$TOKENS" --workdir "$WORK/bench" "$@" 2>&1 | tee "$OUT/$log_file"
    tail -n +"$NEW" benchmarks/results.jsonl > "$OUT/results-new.jsonl"
}
bench speed-4-layers.txt --repeats "$REPEATS"
log "4-layer models done"
if [ $(( $(date +%s) - T0 )) -lt "$BIG_START_BEFORE" ]; then
    bench speed-big.txt --repeats 3 --layers "$BIG_LAYERS" --widths 3072
    log "$BIG_LAYERS-layer model done"
else
    log "no time left for the $BIG_LAYERS-layer model"
fi
