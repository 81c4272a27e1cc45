"""How many threads llama.cpp computes with, and why: the CPUs this process may really use.

llama-cpp-python's default is half of ``os.cpu_count()`` for decoding and all of it for prompts.
Both are wrong in the places notebooks run: on a 2-CPU machine (Binder, small cloud VMs) half is
one thread, and decoding with two was 1.5-1.9x faster in ``benchmarks/stream_overhead.py``; in a
container ``os.cpu_count()`` counts the host's CPUs, not the few the container's quota allows,
and llama.cpp's threads spin while they wait, so threads beyond the quota steal from each other.

The choice: the CPUs this process may run on (its affinity), capped by a cgroup CPU quota; where
those CPUs are hyperthreads of fewer physical cores (at least 2), one thread per physical core, as
llama.cpp's own tools choose. Prompts use the same count.

Open problem: OpenMP's waiting threads spin by default, and when two busy programs share the
cores they stall each other at every barrier. ``benchmarks/openmp_threads.py`` (2 cores, 75M f16
model): 2 threads decode 88 tok/s alone and 8 each with two processes at once; 1 thread 54 alone
and ~50 each; with ``OMP_WAIT_POLICY=PASSIVE`` 2 threads give 65 alone and ~42 each. No setting
wins both cases, so the engine keeps OpenMP's default and ``%exaone info`` shows the policy; a
user on a shared machine can set ``OMP_WAIT_POLICY=PASSIVE`` or ``--n-threads 1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Threads:
    decode: int  # llama.cpp's n_threads: generation, one token at a time
    batch: int  # n_threads_batch: the prompt
    why: str  # for ``%exaone info``


WAIT_POLICY = "OMP_WAIT_POLICY"


def wait_policy() -> str:
    """How OpenMP's waiting threads wait in this process, for ``%exaone info``."""
    value = os.environ.get(WAIT_POLICY)
    if value is None:
        return "spin, then sleep (the OpenMP default)"
    how = {"PASSIVE": "sleep", "ACTIVE": "spin"}.get(value.upper(), "as set")
    return f"{how} ({WAIT_POLICY}={value})"


def plan_threads(
    logical: int, quota: float | None, physical: int | None, requested: int | None = None
) -> Threads:
    """The thread counts for ``logical`` usable CPUs, a cgroup ``quota`` in CPUs (None: none),
    ``physical`` cores behind them (None: unknown), and the user's ``--n-threads``."""
    if requested:
        return Threads(requested, requested, "set with --n-threads")
    usable, limit = max(logical, 1), ""
    if quota is not None and quota < usable:
        usable = max(1, round(quota))
        limit = f" (the container's CPU quota is {quota:g} of the {logical} CPUs it shows)"
    if physical is not None and 2 <= physical < usable and not limit:
        return Threads(
            physical,
            physical,
            f"one per physical core: {logical} CPUs are {physical} cores with hyperthreads",
        )
    noun = "CPU" if usable == 1 else "CPUs"
    return Threads(usable, usable, f"all {usable} usable {noun}{limit}")


def choose_threads(requested: int | None = None) -> Threads:
    """``plan_threads`` for this process on this machine."""
    cpus = usable_cpus()
    return plan_threads(len(cpus), cgroup_quota(), physical_cores(cpus), requested)


def usable_cpus() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def cgroup_quota() -> float | None:
    """The CPU quota of this process's cgroup in CPUs (v2 ``cpu.max``, v1 ``cfs_quota_us``)."""
    root = Path("/sys/fs/cgroup")
    try:
        fields = (root / "cpu.max").read_text().split()
        if fields and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def physical_cores(cpus: set[int]) -> int | None:
    """How many physical cores ``cpus`` belong to (Linux sysfs), None where unknown."""
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            siblings = (topology / "thread_siblings_list").read_text().strip()
            package = (topology / "physical_package_id").read_text().strip()
        except OSError:
            return None
        cores.add((package, siblings))
    return len(cores) or None
