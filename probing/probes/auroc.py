"""AUROC, the one implementation: per column of scores, the rows where ``positive`` holds against the
rest.

The Mann-Whitney statistic with ties counting one half, which is the trapezoidal area under the ROC
curve that scikit-learn computes: one sort of the negatives and two binary searches per column. NaN
where a column has no positive or no negative row (a transfer test set of one class) or holds a NaN
score. The probes' metrics call it on torch tensors (on their device), the harm-score rates on numpy
arrays.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def auroc_ovr(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """AUROC per layer of ``scores [N, L]`` for the rows where ``positive`` is true vs the rest."""
    pos = scores[positive].T.contiguous()
    neg = scores[~positive].T.contiguous()
    if pos.shape[1] == 0 or neg.shape[1] == 0:
        return torch.full(
            (scores.shape[1],), float("nan"), dtype=torch.float64, device=scores.device
        )
    neg_sorted = neg.sort(dim=1).values
    below = torch.searchsorted(neg_sorted, pos, right=False)
    at_or_below = torch.searchsorted(neg_sorted, pos, right=True)
    wins = (below + at_or_below).double().sum(1) / 2
    area = wins / (pos.shape[1] * neg.shape[1])
    return area.masked_fill(scores.isnan().any(0), float("nan"))


def auroc_columns(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """:func:`auroc_ovr` of every column of ``scores [n, L]`` (numpy in, numpy out)."""
    scores = torch.from_numpy(np.asarray(scores, dtype=np.float64))
    mask = torch.from_numpy(np.asarray(positive, dtype=bool))
    return auroc_ovr(scores, mask).numpy()


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUROC of one score per row (NaN with one class only)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return math.nan
    return float(auroc_columns(scores.reshape(-1, 1), positive)[0])
