"""How many CPU threads to use, the way llama.cpp's own tools count them.

Token generation is memory-bound and runs best with one thread per physical core: SMT
siblings share the core's load/store units, so a second thread per core only adds
synchronisation. Prompt evaluation (batches) is compute-bound and can use every CPU we may run
on. llama-cpp-python instead defaults to half the logical CPUs, which halves decoding wherever
logical CPUs are physical cores (most VMs). We read the topology from /sys and respect the
scheduler affinity mask and the cgroup CPU quota (containers), so `docker --cpus 2` on a
64-core host gives 2, not 64.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def affinity() -> set[int]:
    """The CPUs the scheduler lets this process run on."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def cgroup_quota(root: Path = Path("/")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 cpu.max, else v1 cfs_quota/period); None = no limit."""
    fs = root / "sys/fs/cgroup"
    v2 = _read(fs / "cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        return _ratio(quota, period or "100000")
    return _ratio(_read(fs / "cpu/cpu.cfs_quota_us") or "", _read(fs / "cpu/cpu.cfs_period_us") or "")


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max", missing files
        return None
    return q / p if q > 0 and p > 0 else None


def physical_cores(cpus: set[int], root: Path = Path("/")) -> int:
    """How many distinct physical cores `cpus` cover (SMT siblings counted once).

    A core is (package, core id); CPUs whose topology cannot be read count as their own core.
    """
    cores = set()
    for cpu in cpus:
        topo = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
        package, core = _read(topo / "physical_package_id"), _read(topo / "core_id")
        cores.add((package, core) if package is not None and core is not None else ("cpu", cpu))
    return max(1, len(cores))


def _capped(n: int, root: Path) -> int:
    quota = cgroup_quota(root)
    return max(1, min(n, math.ceil(quota))) if quota else max(1, n)


def usable_cpus(root: Path = Path("/"), cpus: set[int] | None = None) -> int:
    """Every CPU this process may use: the affinity mask, capped by the cgroup quota."""
    return _capped(len(affinity() if cpus is None else cpus), root)


def decode_threads(root: Path = Path("/"), cpus: set[int] | None = None) -> int:
    """Threads for token generation: physical cores among the usable CPUs, capped by the quota."""
    return _capped(physical_cores(affinity() if cpus is None else cpus, root), root)


def default_threads() -> tuple[int, int]:
    """(n_threads, n_threads_batch) as llama.cpp would pick them here."""
    return decode_threads(), usable_cpus()
