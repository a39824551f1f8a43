#!/usr/bin/env bash
# Is the "quantized decode with extra buffer types" crash on the lent Xeon AMX, or our Python path?
# Run on the GPU machine from the repo root with .gpu/ (benchmarks/gpu_prepare.sh) carried there;
# CPU-only build, ~1 min on 16 cores. Results: benchmarks/RESULTS.md, "The AMX probe ... re-examined".
set -u
WORK=${GPU_WORK:-$(mktemp -d)}
. benchmarks/gpu_env.sh
gpu_setup > "$WORK/build.log" 2>&1 || { tail -20 "$WORK/build.log"; exit 1; }
echo "built (CPU only) at ${SECONDS}s"
export GGML_NO_BACKTRACE=1
echo "cpu flags: $(grep -o 'amx[a-z_0-9]*\|avx512f ' /proc/cpuinfo | sort -u | tr '\n' ' ')"
timeout 60 python3 -m llm_phi_gguf.probe > "$WORK/a.txt" 2>&1; echo "A probe, numpy first (as shipped): exit $?"
mkdir -p "$WORK/pre" && echo 'import llama_cpp' > "$WORK/pre/sitecustomize.py"
PYTHONPATH="$WORK/pre${PYTHONPATH:+:$PYTHONPATH}" timeout 60 python3 -m llm_phi_gguf.probe > "$WORK/b.txt" 2>&1
echo "B probe, llama_cpp first: exit $?"
timeout 60 python3 -m llm_phi_gguf.probe --safe > "$WORK/c.txt" 2>&1; echo "C probe --safe: exit $?"
Q="$WORK/q.gguf"
timeout 60 python3 -c "
import sys; from pathlib import Path; from llm_phi_gguf.probe import write_random_phi3, quantize_q4_k_m
f, q = Path(sys.argv[1]), Path(sys.argv[2]); write_random_phi3(f); quantize_q4_k_m(f, q)" "$WORK/f.gguf" "$Q" \
    > "$WORK/m.txt" 2>&1; echo "model: exit $?"
for repack in "" --no-repack; do
    timeout 60 "$BIN/llama-completion" -m "$Q" -p 'a b' -n 4 -no-cnv -c 256 -t 4 $repack < /dev/null > "$WORK/d.txt" 2>&1
    echo "D llama-completion ${repack:-(repacking on)}, no Python: exit $?"
done
grep -i -m4 "repack\|AMX\|CPU_REPACK\|extra" "$WORK/d.txt"
tail -3 "$WORK/a.txt"
# not yet run (added after the first run, for the next lease): which of our load parameters matters
for t in 1 4; do
  for ctx in 64 256; do
    LLM_PHI_EXTRA_BUFTS=0 timeout 60 python3 -c "
import sys; from llm_phi_gguf.runtime import LoadOptions, load_llama
llama = load_llama(sys.argv[1], LoadOptions(n_ctx=$ctx, n_batch=64, n_threads=$t, flash_attn=False))
llama.eval(llama.tokenize(b'a b a', add_bos=True)); print('ok')" "$Q" > "$WORK/f.txt" 2>&1
    echo "F Python decode, extra bufts off, $t threads, n_ctx $ctx, flash attention off: exit $?"
  done
done
