"""Benchmark: the paired bootstrap behind ``above_words.csv``, as row weights over one ranking per column
(what ``paired_deltas`` does) against recomputing every resample's metrics (sort per resample).

    python bench/above_words.py [--bootstrap 1000] [--naive 100]

Shapes: one test set of ``n`` rows scored by a probe on ``L`` layers plus the text baseline (the
generalize and monitor sizes). The naive loop runs ``--naive`` resamples and is extrapolated to
``--bootstrap``; both draw the same resamples, and the replicates are checked equal.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from probing.probes.above_words import Paired, column_metrics, paired_deltas, resample, stack_rows

SHAPES = {"SmolLM2 test set (600 rows, 31 layers)": (600, 31), "pooled language (320, 31)": (320, 31),
          "monitor eval set (1,480 rows, 31 layers)": (1480, 31)}  # fmt: skip


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = text.split("flags", 2)[1].split("\n")[0].split()
    except (OSError, IndexError):
        return platform.machine()
    keep = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{platform.machine()} {' '.join(keep)}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--naive", type=int, default=100)
    args = ap.parse_args()
    print(f"CPU: {cpu_flags()}")
    print("| shape | weighted (s) | naive (s, extrapolated) | naive / weighted |")
    print("|---|---|---|---|")
    for name, (n, layers) in SHAPES.items():
        rng = np.random.default_rng(0)
        pos = rng.random(n) < 0.5
        p = Paired(rng.standard_normal((n, layers)) + pos[:, None], rng.standard_normal(n) + pos,
                   pos, np.zeros(layers), 0.0)  # fmt: skip
        start = time.perf_counter()
        d = paired_deltas(p, 0.01, args.bootstrap, seed=1)
        fast = time.perf_counter() - start
        own, own_pos, ref, ref_pos, thresholds = stack_rows(p)
        draw = np.random.default_rng(1)
        start = time.perf_counter()
        for b in range(args.naive):
            i, j = resample(draw, len(own), len(ref))
            got = column_metrics(own[i], own_pos[i], ref[j], ref_pos[j], thresholds, 0.01)
            assert np.allclose(got["auroc"][:-1] - got["auroc"][-1], d["auroc"][1][b])
        naive = (time.perf_counter() - start) * args.bootstrap / args.naive
        print(f"| {name} | {fast:.2f} | {naive:.2f} | {naive / fast:.1f}× |")


if __name__ == "__main__":
    main()
