#!/usr/bin/env bash
# Is the "quantized decode with extra buffer types" crash on the lent Xeon AMX, or our Python path?
# Run on the GPU machine from the repo root with .gpu/ (benchmarks/gpu_prepare.sh) carried there;
# CPU-only build, ~1 min on 16 cores. Results: benchmarks/RESULTS.md, "The AMX probe ... re-examined".
set -u; W=/tmp/w; mkdir -p $W
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl && cp -r .gpu/llama_py/. /tmp/site/ || exit 1
tar -xJf .gpu/llama.cpp-src.tar.xz -C $W || exit 1
cmake -S $W/llama.cpp -B $W/b -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF > $W/log 2>&1 || { tail -20 $W/log; exit 1; }
cmake --build $W/b --target llama-completion -j "$(nproc)" >> $W/log 2>&1 || { tail -20 $W/log; exit 1; }
echo "built (CPU only) at ${SECONDS}s"
export PYTHONPATH=/tmp/site LLAMA_CPP_LIB_PATH=$W/b/bin GGML_NO_BACKTRACE=1
echo "cpu flags: $(grep -o 'amx[a-z_0-9]*\|avx512f ' /proc/cpuinfo | sort -u | tr '\n' ' ')"
timeout 60 python3 -m llm_phi_gguf.probe > $W/a.txt 2>&1; echo "A probe, numpy first (as shipped): exit $?"
mkdir -p /tmp/pre && echo 'import llama_cpp' > /tmp/pre/sitecustomize.py
PYTHONPATH=/tmp/pre:/tmp/site timeout 60 python3 -m llm_phi_gguf.probe > $W/b.txt 2>&1; echo "B probe, llama_cpp first: exit $?"
timeout 60 python3 -m llm_phi_gguf.probe --safe > $W/c.txt 2>&1; echo "C probe --safe: exit $?"
timeout 60 python3 -c "
from pathlib import Path; from llm_phi_gguf.probe import write_random_phi3, quantize_q4_k_m
write_random_phi3(Path('/tmp/f.gguf')); quantize_q4_k_m(Path('/tmp/f.gguf'), Path('/tmp/q.gguf'))" > $W/m.txt 2>&1; echo "model: exit $?"
timeout 60 $W/b/bin/llama-completion -m /tmp/q.gguf -p 'a b' -n 4 -no-cnv -c 256 -t 4 < /dev/null > $W/d.txt 2>&1
echo "D llama-completion, repack on (no Python): exit $?"
grep -i -m4 "repack\|AMX\|CPU_REPACK\|extra" $W/d.txt
timeout 60 $W/b/bin/llama-completion -m /tmp/q.gguf -p 'a b' -n 4 -no-cnv -c 256 -t 4 --no-repack < /dev/null > $W/e.txt 2>&1
echo "E llama-completion --no-repack: exit $?"
tail -3 $W/a.txt
# not yet run (added after the first run, for the next lease): which of our load parameters matters
for t in 1 4; do
  for ctx in 64 256; do
    LLM_PHI_EXTRA_BUFTS=0 timeout 60 python3 -c "
from llm_phi_gguf.runtime import LoadOptions, load_llama
llama = load_llama('/tmp/q.gguf', LoadOptions(n_ctx=$ctx, n_batch=64, n_threads=$t, flash_attn=False))
llama.eval(llama.tokenize(b'a b a', add_bos=True)); print('ok')" > $W/f.txt 2>&1
    echo "F Python decode, extra bufts off, $t threads, n_ctx $ctx, flash attention off: exit $?"
  done
done
