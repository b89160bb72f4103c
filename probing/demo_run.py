"""A demo run: its sizes (``DemoConfig``) and its state (``Demo``: output folder, each stage's time
and threads, notes of skipped stages, the report's sections), shared by the stages (:mod:`probing.demo`)
and the report (:mod:`probing.demo_report`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from threadpoolctl import threadpool_limits

from probing.errors import ProbingError

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """The demo's sizes (defaults: about 6 minutes on 2 otherwise idle CPU cores).

    Args:
        output: folder of the report and every stage's files.
        model: model of the probing side.
        alignment_model: model of the alignment side (refusal, emotions, grafting).
        normal: built-in normal prompts used.
        malicious: built-in malicious prompts used.
        jailbreak: built-in jailbreak prompts used.
        contrast: built-in contrast prompts (safe requests in harmful words) for "Does it generalise?".
        heldout: prompts of each held-out set and form (safe-sounding / harmful × imperative / question).
        crosslingual: prompts of each built-in set (normal, malicious, contrast) in English and in each
            translation (es, zh, ru) for "Does the model know more than the words?" (0: none).
        alignment_per_class: prompts per class on the alignment model.
        epochs: probe training epochs.
        graft_prompts: malicious prompts grafted into.
        graft_stride: graft at every n-th layer.
        max_new_tokens: greedy tokens judged for refusal.
        alignment: run the alignment side.
        compare: run the model/format comparison.
        compare_per_class: normal and malicious prompts per run of the comparison.
        threads: CPU threads of every stage (torch and the BLAS/OpenMP pools of numpy and
            scikit-learn). Default: chosen at the start of each stage — the cores other processes
            leave free (measured over 0.25 s), at least 1 (on a shared machine, threads
            that wait for a busy core made small forward passes and scikit-learn fits 2-10× slower)
            — except that stages training or applying torch probes keep torch's default: their
            numbers depend on the thread count, and the report must not depend on the load.
    """

    output: str = "demo_out"
    model: str = "smollm2-135m-instruct"
    alignment_model: str = "qwen2.5-coder-0.5b-instruct"
    normal: int = 200
    malicious: int = 200
    jailbreak: int = 100
    contrast: int = 150
    heldout: int = 50
    crosslingual: int = 30
    alignment_per_class: int = 50
    epochs: int = 30
    graft_prompts: int = 24
    graft_stride: int = 4
    compare_per_class: int = 100
    max_new_tokens: int = 16
    alignment: bool = True
    compare: bool = True
    threads: int | None = None


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
