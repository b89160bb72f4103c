"""Train on some prompt sources, test on others: leave-one-source-out folds and explicit train→test pairs.

For each fold the training sources' rows are split (stratified by source and class) into fit / val /
test parts; heads are fitted on *fit* (standardised with its statistics), the threshold of every layer is
chosen on *val* (at most ``fpr`` of its negatives flagged), the *test* part gives the in-distribution
result, and every held-out source is scored with the same heads and thresholds (cross-source result).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from probing.errors import ProbingError
from probing.generalize.data import SourceBlock, split_rows
from probing.generalize.fit import Kind, fit_heads, score_heads
from probing.probes.rates import per_source_rows, thresholds_at_fpr

log = logging.getLogger(__name__)
IN_DISTRIBUTION = "in-distribution"


@dataclass
class Fold:
    """Train on ``train`` sources, test on ``test`` sources; ``name`` labels the ``train`` column."""

    name: str
    train: list[str]
    test: list[str] = field(default_factory=list)


def loso_folds(names: Sequence[str]) -> list[Fold]:
    """One fold per source: train on all the others, test on it."""
    return [Fold(f"all but {n}", [m for m in names if m != n], [n]) for n in names]


def matrix_folds(entries: Sequence[dict[str, Any]], names: Sequence[str]) -> list[Fold]:
    """Folds from ``[{train: [...], test: [...], name?}]``, every source name checked."""
    folds = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "train" not in entry:
            raise ProbingError(
                f"--matrix entry {i} must be {{train: [sources], test: [sources]}}, got {entry!r}"
            )
        train, test = list(entry["train"]), list(entry.get("test") or [])
        for name in (*train, *test):
            if name not in names:
                raise ProbingError(
                    f"--matrix entry {i} names source {name!r}, which is not in the feature files "
                    f"(their sources: {list(names)})"
                )
        overlap = sorted(set(train) & set(test))
        if overlap:
            raise ProbingError(
                f"--matrix entry {i} tests on {overlap}, which it also trains on; a source is either "
                "trained on or held out"
            )
        folds.append(Fold(str(entry.get("name") or "+".join(train)), train, test))
    return folds


def _standardiser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    return mean, torch.where(std > 1e-6, std, torch.ones_like(std))


def run_fold(
    block: SourceBlock,
    fold: Fold,
    probes: Sequence[Kind],
    fpr: float = 0.01,
    l2: float = 1e-2,
    seed: int = 0,
    split: Sequence[float] = (0.7, 0.15, 0.15),
) -> list[dict[str, Any]]:
    """Rows ``train, test, split, layer, probe, ...metrics`` of one fold (empty when it cannot train)."""
    train_rows = block.rows_of(fold.train)
    present = set(block.y[train_rows].tolist())
    if present != {0, 1}:
        log.warning(
            "fold %r skipped: its training sources hold only one class (%s)", fold.name, present
        )
        return []
    fit_r, val_r, test_r = split_rows(block.y, block.source, train_rows, split, seed)
    mean, std = _standardiser(block.x[fit_r])

    def x_of(rows: np.ndarray) -> torch.Tensor:
        return (block.x[torch.as_tensor(rows)] - mean) / std

    pos = block.y.astype(bool)
    held = block.rows_of(fold.test)
    out: list[dict[str, Any]] = []
    for kind in probes:
        head = fit_heads(
            x_of(fit_r), torch.as_tensor(block.y[fit_r]), kind, l2=l2,
            val=(x_of(val_r), torch.as_tensor(block.y[val_r])), seed=seed,
        )  # fmt: skip
        s_val = score_heads(head, x_of(val_r)).numpy()
        threshold = thresholds_at_fpr(s_val[~pos[val_r]], fpr)
        s_test = score_heads(head, x_of(test_r)).numpy()
        extra = {"train": fold.name, "probe": kind}
        out += per_source_rows(
            s_test, pos[test_r], [IN_DISTRIBUTION] * len(test_r), threshold, block.layers,
            fpr=fpr, extra={**extra, "split": "in_distribution"},
        )  # fmt: skip
        if len(held):
            s_held = score_heads(head, x_of(held)).numpy()
            out += per_source_rows(
                s_held, pos[held], block.source[held], threshold, block.layers,
                reference=(s_test, pos[test_r]), fpr=fpr, extra={**extra, "split": "cross_source"},
            )  # fmt: skip
    for row in out:
        row["test"] = row.pop("source")
    log.info("fold %r: trained on %d rows, tested on %s", fold.name, len(fit_r), fold.test or "-")
    return out
