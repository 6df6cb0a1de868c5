"""How many threads to compute with: the CPUs this process may actually use, and no long busy-waiting.

A laptop or CI runner is rarely idle. torch's default of one OpenMP thread per core, each spinning
while it waits for the others, collapses when another process holds a core: a spinning thread
waits on one the scheduler has put to sleep (measured in the benchmarks page: a bare train step at
half speed beside one busy process). Three rules, applied once at the start of every ``pdn``
command, every test worker and every demo stage (:func:`configure_threads`):

* intra-op threads = the CPUs available to this process: its CPU affinity, capped by the cgroup's
  CPU quota (a container given 1.5 CPUs of a 64-core host gets 2 threads, not 64);
* OpenMP threads that wait spin only briefly, then sleep: with GNU OpenMP (torch's Linux wheels)
  ``GOMP_SPINCOUNT=3000`` (libgomp's default spins 300,000 times, a thousandth of a second or more, before
  it sleeps), with any other runtime ``OMP_WAIT_POLICY=PASSIVE``. A short spin catches the next
  operation of a step without the sleeping thread's wake-up (measured: a sticker step 24% faster and
  ``pdn data synth`` 1.3x faster than never spinning, idle), and it still sleeps long before it can
  hold a core another process needs (beside a busy process as fast as never spinning, to the noise).
  This only takes effect when it is set before torch is first imported, so the ``pdn`` program sets it
  on start and hands it to the processes it starts;
* small work stays on one thread: torch's own grain size keeps element-wise ops of fewer than 32,768
  elements on the calling thread, and closed-loop driving, one frame and one small batch per step,
  runs on one thread (``pdn drive --threads``, default 1).

An explicit ``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` in the environment always wins.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["SPIN_COUNT", "available_cpus", "cgroup_cpu_limit", "configure_threads", "openmp_runtime"]

#: How many times a GNU OpenMP thread spins waiting for work before it sleeps (``GOMP_SPINCOUNT``).
SPIN_COUNT = 3000


@functools.cache
def openmp_runtime() -> str:
    """``"gomp"`` when the installed torch ships GNU OpenMP (``libgomp``), else ``"other"``; found on disk,
    without importing torch (its runtime reads the wait settings once, when it loads). Looked up once per
    process: the demo runs every command, each configuring its threads, in one process."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return "other"
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in map(Path, roots):
        for folder in (root / "lib", root.parent / "torch.libs"):
            if folder.is_dir() and any(folder.glob("libgomp*")):
                return "gomp"
    return "other"


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """CPUs granted by the cgroup's quota (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` in v1), or None when there is no quota or no readable file."""
    root = Path(root)
    try:
        text = (root / "cpu.max").read_text().split()
        if len(text) >= 2 and text[0] != "max":
            quota, period = float(text[0]), float(text[1])
            return quota / period if quota > 0 and period > 0 else None
        if text:
            return None
    except (OSError, ValueError):
        pass
    try:
        quota = float((root / "cpu" / "cpu.cfs_quota_us").read_text().strip())
        period = float((root / "cpu" / "cpu.cfs_period_us").read_text().strip())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus(affinity: set[int] | None = None, cgroup_root: str | Path = "/sys/fs/cgroup") -> int:
    """The CPUs this process can run on: its affinity mask, capped by the cgroup quota rounded up (>= 1)."""
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # not Linux
            affinity = set(range(os.cpu_count() or 1))
    n = max(1, len(affinity))
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        n = min(n, max(1, math.ceil(limit - 1e-9)))
    return n


def configure_threads(environ: Any = None, cpus: int | None = None, runtime: str | None = None) -> dict[str, Any]:
    """Apply the thread choice to this process (and, through ``environ``, to the processes it starts).

    Sets ``OMP_NUM_THREADS`` and the wait setting in ``environ`` (default ``os.environ``) when the user
    left them unset: ``GOMP_SPINCOUNT`` (:data:`SPIN_COUNT`) with GNU OpenMP, ``OMP_WAIT_POLICY=PASSIVE``
    with another runtime (``runtime``: ``"gomp"`` or ``"other"``, default :func:`openmp_runtime`); and
    torch's intra-op threads when torch is already imported (torch reads ``OMP_NUM_THREADS`` itself
    otherwise). Idempotent. Returns the choice: ``threads``, ``wait_policy`` (in words), ``cpus`` and
    whether the wait setting reached this process's OpenMP runtime (``wait_policy_applied``: False when
    torch was imported before it was set).
    """
    env = os.environ if environ is None else environ
    cpus = available_cpus() if cpus is None else max(1, int(cpus))
    torch_loaded = "torch" in sys.modules
    inherited = "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env
    if "OMP_WAIT_POLICY" not in env:
        if (runtime or openmp_runtime()) == "gomp":
            env.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
        else:
            env["OMP_WAIT_POLICY"] = "PASSIVE"
    policy = (env["OMP_WAIT_POLICY"] if "OMP_WAIT_POLICY" in env
              else f"spin {env['GOMP_SPINCOUNT']} times, then sleep")
    user_threads = env.get("OMP_NUM_THREADS", "")
    try:
        threads = max(1, int(user_threads))
    except ValueError:
        threads = cpus
        env["OMP_NUM_THREADS"] = str(threads)
    if torch_loaded:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return {"threads": threads, "cpus": cpus, "wait_policy": policy,
            "wait_policy_applied": inherited or not torch_loaded}
