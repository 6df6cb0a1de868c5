"""The thread choice every pdn command, test worker and demo stage applies (drivenet_patch.safety.threads)."""

from __future__ import annotations

import subprocess
import sys

import torch

from drivenet_patch.safety.threads import (
    SPIN_COUNT,
    available_cpus,
    cgroup_cpu_limit,
    configure_threads,
    openmp_runtime,
)


def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    assert available_cpus(affinity=set(range(64)), cgroup_root=tmp_path) == 2  # 1.5 CPUs, rounded up


def test_cgroup_v2_without_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert available_cpus(affinity={0, 1, 2}, cgroup_root=tmp_path) == 3


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.0
    assert available_cpus(affinity={0, 1, 2, 3}, cgroup_root=tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no quota"
    assert cgroup_cpu_limit(tmp_path) is None


def test_affinity_decides_without_cgroup(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None  # no files: no quota
    assert available_cpus(affinity={3, 5}, cgroup_root=tmp_path) == 2
    assert available_cpus(affinity=set(), cgroup_root=tmp_path) == 1
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert available_cpus(affinity={0, 1, 2}, cgroup_root=tmp_path) == 3


def test_configure_fills_only_what_the_user_left_unset():
    env: dict[str, str] = {}
    before = torch.get_num_threads()
    try:
        choice = configure_threads(env, cpus=3, runtime="gomp")
        assert env == {"GOMP_SPINCOUNT": str(SPIN_COUNT), "OMP_NUM_THREADS": "3"}
        assert choice["threads"] == 3 and torch.get_num_threads() == 3  # torch is imported here: applied now
        assert choice["wait_policy_applied"] is False  # set after torch loaded its OpenMP runtime
        assert choice["wait_policy"] == f"spin {SPIN_COUNT} times, then sleep"
        env = {}
        assert configure_threads(env, cpus=2, runtime="other")["wait_policy"] == "PASSIVE"
        assert env == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "2"}  # no libgomp: never spin
        env = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1"}
        choice = configure_threads(env, cpus=3, runtime="gomp")
        assert env == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1"} and choice["threads"] == 1
        env = {"GOMP_SPINCOUNT": "0"}  # the user's spin count is kept, and counts as set before torch
        choice = configure_threads(env, cpus=2, runtime="gomp")
        assert env == {"GOMP_SPINCOUNT": "0", "OMP_NUM_THREADS": "2"} and choice["wait_policy_applied"] is True
    finally:
        torch.set_num_threads(before)


def test_pdn_sets_the_policy_before_torch_loads():
    """A fresh pdn process: the policy and thread count are in its environment before torch's OpenMP starts."""
    code = ("import os, sys\n"
            "from drivenet_patch.app.cli import main\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main(['--version'])\n"
            "    except SystemExit: pass\n"
            "import torch\n"
            "print(os.environ.get('OMP_WAIT_POLICY', '-'), os.environ.get('GOMP_SPINCOUNT', '-'),\n"
            "      os.environ['OMP_NUM_THREADS'], torch.get_num_threads())\n")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    policy, spin, omp, threads = out.split()
    assert (policy, spin) == (("-", str(SPIN_COUNT)) if openmp_runtime() == "gomp" else ("PASSIVE", "-"))
    assert int(omp) == available_cpus() == int(threads)


def test_the_runtime_is_found_on_disk_and_this_torch_ships_gnu_openmp():
    """torch's Linux wheels ship libgomp; the check reads the package folder and never imports torch."""
    import platform

    if platform.system() == "Linux":
        assert openmp_runtime() == "gomp"
    assert openmp_runtime() in ("gomp", "other")
