"""`--positions template` vs `--positions last`: the same forward pass, more states kept.

One process, after the model load: the paper's prompts (../shared/data, half normal, half malicious)
with the embedded SmolLM2-135M-Instruct (float32, chat template, its default system turn shared), the
plan of each (rendering, tokenizing and, for `template`, the character offsets that place `inst`),
then every length-sorted batch through both readers in turn (order rotating per batch, lens top-5 unless
``--lens-top-k``, shared head as `probing extract` runs it). Checks that `post_m` equals `last`. Usage:

    python bench/positions.py [--n 320] [--batch-size 16] [--lens-top-k 5]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=320)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lens-top-k", type=int, default=5, help="0: lens off (--lens_top_k 0)")
    args = ap.parse_args()
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
        for positions in ("last", "template"):
            start = time.perf_counter()
            cfg = ExtractConfig(prompts=sources, positions=positions)
            plans[positions] = plan_rows(cfg, lm.tokenizer, 8192)
            plan_s[positions] = time.perf_counter() - start
    ids = plans["last"].ids
    assert plans["template"].ids == ids, "both plans keep the same rows in the same order"
    names = plans["template"].position_names
    readers = {
        "last": ActivationReader(lm, "last", 1, top_k=args.lens_top_k),
        "template": ActivationReader(lm, "template", len(names), top_k=args.lens_top_k),
    }
    for r in readers.values():
        r.share_prefix(ids)
    with torch.inference_mode():
        readers["last"](ids[: args.batch_size])  # warm-up
    times = dict.fromkeys(readers, 0.0)
    diff, load = 0.0, os.getloadavg()[0]
    for b, lo in enumerate(range(0, len(ids), args.batch_size)):
        batch, outs = ids[lo : lo + args.batch_size], {}
        for j in range(2):
            name = list(readers)[(b + j) % 2]
            start = time.perf_counter()
            outs[name] = readers[name](batch)
            times[name] += time.perf_counter() - start
        diff = max(
            diff,
            float((outs["template"].hidden[:, :, -1] - outs["last"].hidden[:, :, 0]).abs().max()),
        )
    print(
        f"{len(ids)} prompts, batch {args.batch_size}, {torch.get_num_threads()} threads, "
        f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}; template stores {names}"
    )
    print(f"{'positions':10s} {'plan s':>8s} {'forward s':>10s}")
    for name in readers:
        print(f"{name:10s} {plan_s[name]:8.2f} {times[name]:10.1f}")
    print(
        f"template / last forward {times['template'] / times['last']:.2f}; "
        f"post_m vs last max |diff| {diff:.1e}"
    )


if __name__ == "__main__":
    main()
