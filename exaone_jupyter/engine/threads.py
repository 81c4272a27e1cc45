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
    CPUs nobody else uses, more threads decode faster (2 threads: 1.2-1.9x on 2 cores); when other
    programs keep those CPUs busy, a thread that is descheduled holds the others at the barrier,
    and fewer threads are faster, up to 8x on the same machine (``benchmarks/stream_overhead.py``).
    No count fixed at load is right for both, so the tuner measures. The chosen count's step times
    are watched in windows of 8; every other candidate is tried now and then for up to 3 steps
    (one, if that step is already 1.3x slower than the choice) and replaces the choice if it is
    faster. A candidate that loses waits twice as long for its next try (32 to 512 steps), and at
    least 50 times as many steps as its try was slower (a 2-thread step that took 50x the 1-thread
    one, as seen on a busy 2-core machine, waits 2,500 steps): a far slower count costs ~2%.
    When the choice's window runs 2x slower than its fastest window since it was chosen (the
    load grew), the smaller counts are tried at once, at most once in 128 steps. Its state
    carries over from reply to reply.
    """

    PROBE = 3  # steps a candidate gets in a try (a median of 3)
    WATCH = 8  # steps per window of the choice's times
    FIRST_GAP, LONGEST_GAP = 32, 512
    ALARM_GAP = 128  # the fewest steps between two alarms

    def __init__(self, most: int, set_threads) -> None:
        self.candidates = sorted({most, max(1, (most + 1) // 2)} | ({1} if most <= 4 else set()))
        self.set_threads = set_threads
        self.current = self.best = most
        self._step = 0
        self._gap = dict.fromkeys(self.candidates, self.FIRST_GAP)
        self._due = {n: 0 for n in self.candidates if n != most}  # when each other count is tried
        self._window: list[float] = []
        self._expected: float | None = None  # the choice's median step time, last window
        self._alarm_at = -self.ALARM_GAP
        self._baseline = float("inf")  # the choice's fastest window since it was chosen
        self._trying: int | None = None
        self._tries: list[float] = []

    def before(self) -> None:
        """Call before a decode step: sets the thread count for it."""
        if self._trying is None and self._expected is not None:
            due = [n for n, at in self._due.items() if at <= self._step]
            if due:
                self._trying, self._tries = due[0], []
        wanted = self._trying if self._trying is not None else self.best
        if wanted != self.current:
            self.set_threads(wanted)
            self.current = wanted

    def after(self, seconds: float) -> None:
        """Call after the decode step with its wall time."""
        self._step += 1
        if self._trying is None:
            self._watch(seconds)
            return
        n, expected = self._trying, self._expected or seconds
        self._tries.append(seconds)
        slower = seconds > 1.3 * expected
        if not slower and len(self._tries) < self.PROBE:
            return
        self._trying = None
        if not slower and _median(self._tries) * 1.05 < expected:  # faster: the new choice
            old, self.best = self.best, n
            del self._due[n]
            self._gap[old] = max(self.FIRST_GAP, int(50 * expected / _median(self._tries)))
            self._due[old] = self._step + self._gap[old]
            self._expected, self._window = _median(self._tries), []
            self._baseline = self._expected
        else:  # wait longer for the next try, in proportion to what this one cost
            self._gap[n] = max(
                min(2 * self._gap[n], self.LONGEST_GAP), int(50 * seconds / expected)
            )
            self._due[n] = self._step + self._gap[n]

    def _watch(self, seconds: float) -> None:
        self._window.append(seconds)
        if len(self._window) < (self.WATCH if self._expected is not None else 2):
            return  # the first window is short: the other counts get their try sooner
        median, self._window = _median(self._window), []
        self._baseline = min(self._baseline, median)
        if median > 2 * self._baseline and self._step - self._alarm_at >= self.ALARM_GAP:
            self._alarm_at, self._baseline = self._step, median  # alarm once per change
            for n in self._due:
                if n < self.best:  # more load never makes more threads the better choice
                    self._due[n] = self._step
        self._expected = median


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]
