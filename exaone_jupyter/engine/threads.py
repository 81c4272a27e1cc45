"""How many threads llama.cpp computes with, and why: the CPUs this process may really use.

llama-cpp-python's default is half of ``os.cpu_count()`` for decoding and all of it for prompts.
Both are wrong in the places notebooks run: on a 2-CPU machine (Binder, small cloud VMs) half is
one thread, and decoding with two was 1.5-1.9x faster in ``benchmarks/stream_overhead.py``; in a
container ``os.cpu_count()`` counts the host's CPUs, not the few the container's quota allows,
and llama.cpp's threads spin while they wait, so threads beyond the quota steal from each other.

The choice: the CPUs this process may run on (its affinity), capped by a cgroup CPU quota; where
those CPUs are hyperthreads of fewer physical cores (at least 2), one thread per physical core, as
llama.cpp's own tools choose. Prompt processing uses all the usable CPUs.
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
            usable,
            f"one per physical core: {logical} CPUs are {physical} cores with hyperthreads "
            f"(prompts: {usable})",
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


class ThreadTuner:
    """Picks the decode thread count by timing decode steps while replies stream.

    llama.cpp's threads meet at a barrier after every operation and spin while they wait. On
    CPUs nobody else uses, more threads decode faster (2 threads: 1.5-1.9x on 2 cores); when other
    programs keep those CPUs busy, a thread that is descheduled holds all others at the barrier,
    and fewer threads are faster, up to 6x on the same machine (``benchmarks/stream_overhead.py``).
    No count fixed at load is right for both, so the tuner measures: every candidate count gets a
    few decode steps (a probe), the fastest by median time is used until the next probe, and the
    gap between probes doubles while the choice holds (64 to 1,024 tokens) and shrinks back when
    it changes. Every 8 steps the choice's median time is compared with its time when chosen: 1.5x
    slower starts a probe at once (the other programs' load comes and goes). A count that is
    clearly slower than the choice gets one step per probe, not three. Its state carries over
    from reply to reply.
    """

    PROBE = 3  # decode steps per candidate in a probe (a median of 3)
    WATCH = 8  # steps between checks that the choice still runs as fast as when it was chosen
    FIRST_GAP, LONGEST_GAP = 64, 1024

    def __init__(self, most: int, set_threads) -> None:
        self.candidates = sorted({most, max(1, (most + 1) // 2)} | ({1} if most <= 4 else set()))
        self.set_threads = set_threads
        self.current = most
        self.best = most
        self.gap = self.FIRST_GAP
        self._plan: list[int] = self._probe_plan()
        self._times: dict[int, list[float]] = {}
        self._until_probe = 0
        self._recent: list[float] = []  # step times since the last check of the choice
        self._expected = 0.0  # the choice's median step time in the last probe

    def _probe_plan(self) -> list[int]:
        """The current choice first (its time is the yardstick), then the others."""
        if len(self.candidates) < 2:
            return []
        order = [self.best] + [n for n in self.candidates if n != self.best]
        return [n for n in order for _ in range(self.PROBE)]

    def before(self) -> None:
        """Call before a decode step: sets the thread count for it."""
        wanted = self._plan[0] if self._plan else self.best
        if wanted != self.current:
            self.set_threads(wanted)
            self.current = wanted

    def after(self, seconds: float) -> None:
        """Call after the decode step with its wall time."""
        if not self._plan:
            self._until_probe -= 1
            self._recent.append(seconds)
            if len(self._recent) == self.WATCH:  # much slower than when chosen: the load changed
                if _median(self._recent) > 1.5 * self._expected:
                    self._until_probe, self.gap = 0, self.FIRST_GAP // 2
                self._recent = []
            if self._until_probe <= 0:
                self._plan, self._times, self._recent = self._probe_plan(), {}, []
            return
        n = self._plan.pop(0)
        self._times.setdefault(n, []).append(seconds)
        yardstick = self._times.get(self.best)
        if n != self.best and yardstick and seconds > 1.3 * _median(yardstick):
            self._plan = [m for m in self._plan if m != n]  # clearly slower: spare its other steps
        if not self._plan:
            medians = {m: _median(t) for m, t in self._times.items()}
            best = min(medians, key=lambda m: medians[m])
            self.gap = min(self.gap * 2, self.LONGEST_GAP) if best == self.best else self.FIRST_GAP
            self.best, self._until_probe, self._expected = best, self.gap, medians[best]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]
