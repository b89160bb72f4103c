"""`--positions template` and `[inst, last, mean]` vs `--positions last`: one forward pass each,
more states kept.

One process, after the model load: the paper's prompts (../shared/data, half normal, half malicious)
with the embedded SmolLM2-135M-Instruct (float32, chat template, its default system turn shared), the
plan of each (rendering, tokenizing and, for `template` and `pooled` = `[inst, last, mean]`, the
character offsets that place `inst`), then every length-sorted batch through each reader in turn
(order rotating per batch, lens top-5 unless ``--lens-top-k``, shared head as `probing extract` runs
it). Reports the total time per reader and the median over batches of its time / `last`'s on the
same batch (the readers of a batch run back to back, so the median resists the load's spikes).
Checks that `post_m` and the pooled `last` equal `last`. Usage:

    python bench/positions.py [--n 320] [--batch-size 16] [--lens-top-k 5] [--modes last,pooled]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract import write_sources  # noqa: E402 (the paper's prompts, as bench/extract.py writes them)

MODES = {"last": "last", "template": "template", "pooled": ["inst", "last", "mean"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=320)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lens-top-k", type=int, default=5, help="0: lens off (--lens_top_k 0)")
    ap.add_argument("--modes", default="last,template,pooled", help="readers to time (last first)")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if modes[0] != "last" or not set(modes) <= set(MODES):
        ap.error(f"--modes: 'last' first, then some of {list(MODES)}")
    import numpy as np
    import torch

    from probing.features.activations import ActivationReader
    from probing.features.extract import ExtractConfig
    from probing.features.plan import plan_rows
    from probing.models import ModelConfig, load_model
    from probing.prompts import PromptSource

    lm = load_model(ModelConfig())
    with tempfile.TemporaryDirectory() as tmp:
        sources = [PromptSource(**s) for s in write_sources(args.n, Path(tmp))]
        plans, plan_s = {}, {}
        for mode in modes:
            start = time.perf_counter()
            cfg = ExtractConfig(prompts=sources, positions=MODES[mode])
            plans[mode] = plan_rows(cfg, lm.tokenizer, 8192)
            plan_s[mode] = time.perf_counter() - start
    ids = plans["last"].ids
    assert all(p.ids == ids for p in plans.values()), "every plan keeps the same rows in order"
    readers = {
        m: ActivationReader(lm, p.position_offsets, top_k=args.lens_top_k) for m, p in plans.items()
    }
    for r in readers.values():
        r.share_prefix(ids)
    with torch.inference_mode():
        readers["last"](ids[: args.batch_size])  # warm-up
    times = dict.fromkeys(readers, 0.0)
    per_batch: dict[str, list[float]] = {name: [] for name in readers}
    diff, load = 0.0, os.getloadavg()[0]
    for b, lo in enumerate(range(0, len(ids), args.batch_size)):
        batch, outs = ids[lo : lo + args.batch_size], {}
        for j in range(len(readers)):
            name = list(readers)[(b + j) % len(readers)]
            start = time.perf_counter()
            outs[name] = readers[name](batch)
            per_batch[name].append(time.perf_counter() - start)
            times[name] += per_batch[name][-1]
        for name, out in outs.items():
            at = plans[name].position_offsets.index(0)  # post_m / last
            last = outs["last"].hidden[:, :, 0]
            diff = max(diff, float((out.hidden[:, :, at] - last).abs().max()))
    print(
        f"{len(ids)} prompts, batch {args.batch_size}, {torch.get_num_threads()} threads, "
        f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'positions':10s} {'stored':>6s} {'plan s':>8s} {'forward s':>10s} {'/ last':>7s} "
        f"{'median batch / last':>20s}"
    )
    last_b = np.asarray(per_batch["last"])
    for name in readers:
        stored, ratio = len(plans[name].position_names), times[name] / times["last"]
        median = float(np.median(np.asarray(per_batch[name]) / last_b))
        print(
            f"{name:10s} {stored:6d} {plan_s[name]:8.2f} {times[name]:10.1f} {ratio:7.2f} "
            f"{median:20.2f}"
        )
    print(f"the last token in every mode vs last: max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
