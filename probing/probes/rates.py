"""Harm-score primitives: thresholds at a target false positive rate, TPR at FPR, and per-source,
per-layer metrics (their AUROC from :mod:`probing.probes.auroc`).

A prompt source usually holds one class only (a file of normal prompts, a file of harmful ones). For such a
source AUROC and TPR cannot be computed from its own rows; they are computed against a *reference*: the
in-distribution rows of the other class (e.g. a held-out harmful source's scores ranked against the
in-distribution test split's normal prompts). ``flagged_rate`` is the share of the source's rows flagged at
the given threshold — for a source of safe prompts, its false positive rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from probing.errors import ProbingError
from probing.probes.auroc import auroc_columns


def check_fpr(fpr: float, option: str = "--fpr") -> float:
    if not (isinstance(fpr, (int, float)) and 0 < fpr < 1):
        raise ProbingError(
            f"{option} must be a rate strictly between 0 and 1 (e.g. 0.01), got {fpr}"
        )
    return float(fpr)


def threshold_at_fpr(negative_scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold flagging at most ``floor(fpr * n)`` of the negatives (``score >= t``).

    With fewer than ``1 / fpr`` negatives this is just above the highest negative score (no negative
    is flagged), which a warning reports.
    """
    fpr = check_fpr(fpr)
    neg = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    if neg.size == 0:
        raise ProbingError(
            "the calibration set has no negative (normal) rows; a threshold for a false positive "
            "rate needs them: give a labelled set with --calibrate or set --threshold"
        )
    k = int(math.floor(fpr * neg.size + 1e-9))
    if k >= neg.size:
        return 0.0
    return float(np.nextafter(neg[k], np.inf))


def tpr_at_fpr(scores: np.ndarray, positive: np.ndarray, fpr: float) -> float:
    """Highest true positive rate at a false positive rate ``<= fpr`` on the ROC curve (sklearn, every
    threshold kept: with ``drop_intermediate`` a collinear point that holds the answer can be dropped)."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return math.nan
    f, t, _ = roc_curve(positive, np.asarray(scores, dtype=np.float64), drop_intermediate=False)
    return float(t[f <= fpr + 1e-12].max())


METRIC_COLUMNS = ("accuracy", "auroc", "tpr_at_1fpr", "flagged_rate")


def thresholds_at_fpr(negative_scores: np.ndarray, fpr: float) -> np.ndarray:
    """One threshold per layer (``score >= t`` flags at most ``fpr`` of the negatives) for ``[n, L]``."""
    return np.array(
        [threshold_at_fpr(negative_scores[:, j], fpr) for j in range(negative_scores.shape[1])]
    )


def source_metrics(
    scores: np.ndarray,
    positive: np.ndarray,
    threshold: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    fpr: float = 0.01,
) -> dict[str, np.ndarray]:
    """Metrics per layer of ``scores [n, L]`` with ground truth ``positive [n]`` at ``threshold [L]``.

    ``reference`` (scores ``[m, L]``, positive ``[m]``) supplies the missing class for AUROC and TPR when
    the rows hold one class only.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    flagged = scores >= np.asarray(threshold)[None, :]
    out: dict[str, np.ndarray] = {
        "accuracy": (flagged == positive[:, None]).mean(0),
        "flagged_rate": flagged.mean(0),
    }
    both_s, both_p = scores, positive
    if (positive.all() or not positive.any()) and reference is not None:
        ref_s, ref_p = np.asarray(reference[0], np.float64), np.asarray(reference[1], bool)
        other = ref_p != positive[0] if len(positive) else np.zeros(len(ref_p), bool)
        both_s = np.concatenate([scores, ref_s[other]])
        both_p = np.concatenate([positive, ref_p[other]])
    layers = scores.shape[1]
    out["auroc"] = auroc_columns(both_s, both_p)
    if positive.any() and (~both_p).any():
        out["tpr_at_1fpr"] = np.array(
            [tpr_at_fpr(both_s[:, j], both_p, fpr) for j in range(layers)]
        )
    else:
        out["tpr_at_1fpr"] = np.full(layers, math.nan)
    return out


def per_source_rows(
    scores: np.ndarray,
    positive: np.ndarray,
    sources: Sequence[str],
    threshold: np.ndarray,
    layers: Sequence[int | None],
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    fpr: float = 0.01,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per (source, layer): ``source, layer, rows, positives, accuracy, auroc, tpr_at_1fpr,
    flagged_rate, threshold`` plus ``extra`` columns (``layer`` None: a scorer of no layer, the text
    baseline)."""
    sources_arr = np.asarray(sources, dtype=object)
    rows: list[dict[str, Any]] = []
    for name in dict.fromkeys(sources_arr.tolist()):
        sel = sources_arr == name
        m = source_metrics(scores[sel], positive[sel], threshold, reference, fpr)
        for j, layer in enumerate(layers):
            row = {**(extra or {}), "source": name, "rows": int(sel.sum())}
            row["layer"] = None if layer is None else int(layer)
            row["positives"] = int(positive[sel].sum())
            row.update({k: float(m[k][j]) for k in METRIC_COLUMNS})
            row["threshold"] = float(threshold[j])
            rows.append(row)
    return rows
