"""Thread defaults from fake /sys trees: SMT siblings counted once, affinity and cgroup quotas respected."""

from pathlib import Path

import pytest

from llm_phi_gguf import cpus


def fake_sys(root: Path, topology: dict[int, tuple[int, int]], cpu_max: str | None = None, v1: tuple[str, str] | None = None):
    """topology: cpu -> (package, core)."""
    for cpu, (package, core) in topology.items():
        topo = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core}\n")
    fs = root / "sys/fs/cgroup"
    fs.mkdir(parents=True, exist_ok=True)
    if cpu_max is not None:
        (fs / "cpu.max").write_text(cpu_max + "\n")
    if v1 is not None:
        (fs / "cpu").mkdir()
        (fs / "cpu/cpu.cfs_quota_us").write_text(v1[0] + "\n")
        (fs / "cpu/cpu.cfs_period_us").write_text(v1[1] + "\n")
    return root


# 2 packages x 4 cores x 2 SMT threads; Linux numbers siblings as cpu N and N + 8
SMT_HOST = {cpu: (cpu // 4 % 2, cpu % 4) for cpu in range(16)}


def test_smt_siblings_count_once(tmp_path):
    root = fake_sys(tmp_path, SMT_HOST)
    assert cpus.decode_threads(root, set(range(16))) == 8
    assert cpus.usable_cpus(root, set(range(16))) == 16


def test_vm_without_smt_uses_every_core(tmp_path):
    root = fake_sys(tmp_path, {0: (0, 0), 1: (0, 1)})
    assert cpus.decode_threads(root, {0, 1}) == 2  # llama-cpp-python's default would be 1


def test_affinity_mask_limits_both(tmp_path):
    root = fake_sys(tmp_path, SMT_HOST)
    # cpus 0 and 8 are siblings of one core; 1 is another core
    assert cpus.decode_threads(root, {0, 8, 1}) == 2
    assert cpus.usable_cpus(root, {0, 8, 1}) == 3


@pytest.mark.parametrize("cpu_max, expected", [("max 100000", (8, 16)), ("250000 100000", (3, 3)), ("50000 100000", (1, 1))])
def test_cgroup_v2_quota_caps(tmp_path, cpu_max, expected):
    root = fake_sys(tmp_path, SMT_HOST, cpu_max=cpu_max)
    assert (cpus.decode_threads(root, set(range(16))), cpus.usable_cpus(root, set(range(16)))) == expected


def test_cgroup_v1_quota_caps(tmp_path):
    root = fake_sys(tmp_path, SMT_HOST, v1=("400000", "100000"))
    assert cpus.usable_cpus(root, set(range(16))) == 4
    root2 = fake_sys(tmp_path / "unlimited", SMT_HOST, v1=("-1", "100000"))
    assert cpus.usable_cpus(root2, set(range(16))) == 16


def test_missing_topology_counts_each_cpu(tmp_path):
    (tmp_path / "sys").mkdir()
    assert cpus.decode_threads(tmp_path, {0, 1, 2}) == 3
    assert cpus.cgroup_quota(tmp_path) is None


def test_this_machine_is_consistent():
    n_threads, n_batch = cpus.default_threads()
    assert 1 <= n_threads <= n_batch <= len(cpus.affinity())


@pytest.mark.parametrize("given, expected", [({}, None), ({"n_threads": 1}, (1, 1)), ({"n_threads": 1, "n_threads_batch": 2}, (1, 2))])
def test_loaded_context_uses_the_thread_counts(converted, given, expected):
    from llm_phi_gguf.runtime import LoadOptions, load_llama

    llama = load_llama(converted("phi-4", "f16"), LoadOptions(n_ctx=64, **given))
    expected = expected or (cpus.decode_threads(), cpus.usable_cpus())
    assert (llama.context_params.n_threads, llama.context_params.n_threads_batch) == expected
    llama.close()


def test_doctor_shows_both_thread_counts(llm_cli):
    r = llm_cli("phi", "doctor")
    assert f"CPU threads: {cpus.decode_threads()} for generation" in r.output
    assert f"{cpus.usable_cpus()} for prompt evaluation" in r.output and "-o n_threads" in r.output
