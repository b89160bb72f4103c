"""A demo run's state (``Demo``: its sizes, output folder, each stage's time and threads, notes of
skipped stages, the report's sections), shared by the stages (:mod:`probing.demo`) and the report
(:mod:`probing.demo_report`); the sizes' options are :mod:`probing.demo_config`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from threadpoolctl import threadpool_limits

from probing.demo_config import DemoConfig
from probing.errors import ProbingError

log = logging.getLogger(__name__)


@dataclass
class Demo:
    cfg: DemoConfig
    out: Path = field(init=False)
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    threads: int | None = None  # of the last stage

    def __post_init__(self) -> None:
        self.out = Path(self.cfg.output)
        self.out.mkdir(parents=True, exist_ok=True)

    def stage(
        self, name: str, fn: Callable[[], None], optional: bool = False, keep_threads: bool = False
    ) -> None:
        """Run one stage, timed. ``keep_threads``: its numbers depend on the thread count (torch
        probes trained or applied: the order of floating-point sums), so it keeps torch's default
        unless ``--threads`` is given — the report must not depend on the machine's load."""
        import torch

        before = torch.get_num_threads()
        if self.cfg.threads or not keep_threads:
            threads = stage_threads(self.cfg.threads, self.threads)
        else:
            threads = before
        log.info("== demo stage: %s (%d CPU thread%s)", name, threads, "s"[: threads > 1])
        start = time.perf_counter()
        try:
            torch.set_num_threads(threads)
            with threadpool_limits(limits=threads):
                fn()
        except ProbingError as err:
            if not optional:
                raise
            self.notes[name] = f"skipped: {err}"
            log.warning("demo stage %s skipped: %s", name, err)
        finally:
            torch.set_num_threads(before)
        self.timings[name] = time.perf_counter() - start
        self.threads = threads


def busy_cores(seconds: float = 0.25) -> float | None:
    """Cores that other processes keep busy right now (the demo is idle between its stages): two
    readings of ``/proc/stat`` ``seconds`` apart; None where there is no ``/proc/stat``."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user … steal
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    try:
        total0, idle0 = read()
        time.sleep(seconds)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def stage_threads(requested: int | None, previous: int | None) -> int:
    """``requested``, else the cores that other processes leave free, at least 1: measured
    (:func:`busy_cores`), or else the 1-minute load average less what the demo's previous stage
    (``previous`` threads) added to it."""
    if requested:
        return requested
    cores = os.cpu_count() or 1
    others = busy_cores()
    if others is None:
        others = max(0.0, os.getloadavg()[0] - (previous or 0))
    return max(1, min(cores, int(cores - others + 0.5)))
