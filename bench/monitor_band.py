"""Experiment (issue 21, item 6): does a band of layers beat the monitor recipe's single layer, and the words?

    python bench/monitor_band.py [--band 14:23] [--layer 23] [--repeats 3] [--bootstrap 500]

Needs ``features/monitor-smollm2.h5`` and ``features/heldout-smollm2.h5`` (configs/extract/monitor.yaml,
heldout.yaml). Trains the recipe's linear heads on its training sources (70 % fit, 15 % val; seeds 0..),
thresholds every scorer at 1 % FPR of the val negatives, and scores the recipe's held-out categories, the
evaluation sets written separately and the paper's prompts. Scorers: the recipe's layer, the mean logit of
the layers in ``--band`` (by default the layers where the fit report says the states beat the words on
the test split), and that band plus the text baseline's logit. Prints each scorer's paired difference to
the text baseline and to the recipe's layer (paired bootstrap 95 % intervals, replicates averaged over
the repeats).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from probing.generalize.data import load_block, split_rows
from probing.generalize.fit import fit_heads, score_heads
from probing.probes.above_words import Paired, paired_deltas
from probing.probes.rates import thresholds_at_fpr
from probing.probes.text import fit_text, harm_score, text_probs

FILES = ["features/monitor-smollm2.h5", "features/heldout-smollm2.h5"]
TRAIN = ["normal", "contrast", "malicious", "jailbreak"]
SETS = {
    "recipe's held-out categories": ["normal-heldout", "contrast-heldout", "malicious-heldout"],
    "evaluation sets": ["heldout_benign-imperative", "heldout_benign-question",
                        "heldout_harmful-imperative", "heldout_harmful-question"],
    "paper's prompts": ["paper-normal", "paper-malicious"],
}  # fmt: skip


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--band", default="14:23")
    ap.add_argument("--layer", type=int, default=23)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bootstrap", type=int, default=500)
    args = ap.parse_args()
    lo, hi = (int(v) for v in args.band.split(":"))
    block = load_block(
        FILES, ["normal", "malicious"], {"contrast": "normal", "jailbreak": "malicious"}
    )
    names = [f"layer {args.layer}", f"mean logit of layers {lo}-{hi - 1}", "that band + text"]
    found: dict[str, list] = {}
    for seed in range(args.repeats):
        fit_r, val_r, _ = split_rows(
            block.y, block.source, block.rows_of(TRAIN), (0.7, 0.15, 0.15), seed
        )
        mean, std = block.x[fit_r].mean(0), block.x[fit_r].std(0, unbiased=False).clamp_min(1e-6)

        def x_of(r: np.ndarray, mean: torch.Tensor = mean, std: torch.Tensor = std) -> torch.Tensor:
            return (block.x[torch.as_tensor(r)] - mean) / std

        head = fit_heads(x_of(fit_r), torch.as_tensor(block.y[fit_r]), "linear", l2=1e-2, seed=seed)
        clf = fit_text(
            block.prompts[fit_r], block.y[fit_r], (block.prompts[val_r], block.y[val_r]), seed
        )

        def scores(r: np.ndarray, head=head, clf=clf, x_of=x_of) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
            states = logit(score_heads(head, x_of(r)).numpy())
            text = harm_score(text_probs(clf, block.prompts[r], 2))
            band = states[:, lo:hi].mean(1)
            return np.column_stack([states[:, args.layer], band, band + logit(text)]), text

        s_val, t_val = scores(val_r)
        neg = ~block.y[val_r].astype(bool)
        thr, t_thr = (
            thresholds_at_fpr(s_val[neg], 0.01),
            thresholds_at_fpr(t_val[neg, None], 0.01)[0],
        )
        for name, sources in SETS.items():
            r = block.rows_of(sources)
            s, t = scores(r)
            pos = block.y[r].astype(bool)
            vs_text = paired_deltas(Paired(s, t, pos, thr, t_thr), 0.01, args.bootstrap, seed)
            vs_layer = paired_deltas(
                Paired(s[:, 1:], s[:, 0], pos, thr[1:], thr[0]), 0.01, args.bootstrap, seed
            )
            found.setdefault(name, []).append((vs_text, vs_layer))
    for name, parts in found.items():
        print(f"{name}:")
        for m in ("auroc", "tpr_at_1fpr"):
            for j, scorer in enumerate(names):
                d = np.mean([p[0][m][0][j] for p in parts])
                a, b = np.percentile(np.mean([p[0][m][1][:, j] for p in parts], 0), [2.5, 97.5])
                line = f"  {m:12} {scorer:28} - text {d:+.3f} [{a:+.3f}, {b:+.3f}]"
                if j:
                    d = np.mean([p[1][m][0][j - 1] for p in parts])
                    a, b = np.percentile(
                        np.mean([p[1][m][1][:, j - 1] for p in parts], 0), [2.5, 97.5]
                    )
                    line += f" | - layer {args.layer} {d:+.3f} [{a:+.3f}, {b:+.3f}]"
                print(line)


if __name__ == "__main__":
    main()
