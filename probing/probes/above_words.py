"""Above the words? Paired differences between a hidden-state probe and the text baseline, with intervals.

For one test set, every layer's probe scores and the text baseline's scores of the *same rows* give, per
metric (AUROC, TPR at the FPR of the threshold rule, accuracy at each scorer's own threshold), the
difference probe − text and a paired bootstrap 95 % interval: rows are resampled together for both
scorers, so the interval is of the difference itself. A test set of one class (a held-out source of
harmful prompts) is ranked against reference rows of the other class, resampled alongside it; accuracy
counts the set's own rows only, as :func:`probing.probes.rates.source_metrics` does.

A layer *beats* the words when the interval lies above 0, *loses* to them when it lies below 0, and
*matches* them otherwise. Rows are ``train, test, layer, probe, metric, delta, low, high``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probing.probes.auroc import auroc_columns
from probing.tables import write_csv

METRICS = ("auroc", "tpr_at_1fpr", "accuracy")
COLUMNS = ("train", "test", "layer", "probe", "metric", "delta", "low", "high")
CSV_NAME = "above_words.csv"
CROSS_MEAN = "cross-source (mean)"


@dataclass
class Paired:
    """One test set scored by a probe on every layer (``states [n, L]``) and by the text baseline
    (``text [n]``), with ground truth and each scorer's threshold; ``reference`` (states ``[m, L]``,
    text ``[m]``, positive ``[m]``) supplies the other class when the set holds one class only."""

    states: np.ndarray
    text: np.ndarray
    positive: np.ndarray
    threshold: np.ndarray
    text_threshold: float
    reference: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def tpr_columns(scores: np.ndarray, positive: np.ndarray, fpr: float) -> np.ndarray:
    """Highest TPR at FPR ``<= fpr`` of every column of ``scores [n, k]`` (equal to reading sklearn's
    ROC curve): the positives above the ``floor(fpr * negatives)``-th highest negative."""
    neg, pos = scores[~positive], scores[positive]
    if not len(neg) or not len(pos):
        return np.full(scores.shape[1], math.nan)
    k = int(math.floor(fpr * len(neg) + 1e-9))
    if k >= len(neg):
        return np.ones(scores.shape[1])
    cut = -np.partition(-neg, k, axis=0)[k]
    return (pos > cut[None, :]).mean(0)


def column_metrics(
    own: np.ndarray, own_pos: np.ndarray, ref: np.ndarray, ref_pos: np.ndarray,
    thresholds: np.ndarray, fpr: float,
) -> dict[str, np.ndarray]:  # fmt: skip
    """AUROC and TPR of every column on ``own`` and ``ref`` rows together, accuracy at ``thresholds``
    on ``own`` alone: the metrics of one (resampled) test set, computed directly (the reference the
    weighted bootstrap is tested against)."""
    both, both_pos = np.concatenate([own, ref]), np.concatenate([own_pos, ref_pos])
    return {
        "auroc": auroc_columns(both, both_pos),
        "tpr_at_1fpr": tpr_columns(both, both_pos, fpr),
        "accuracy": ((own >= thresholds[None, :]) == own_pos[:, None]).mean(0),
    }


class _Weighted:
    """Metrics of every column of ``scores [n, k]`` under row weights (a bootstrap resample is the
    count of each row), from one dense ranking of each column: no sort per resample."""

    def __init__(self, scores: np.ndarray, positive: np.ndarray, own: int, thresholds: np.ndarray):
        n, k = scores.shape
        ranks = np.empty((n, k), np.int64)
        for j in range(k):
            ranks[:, j] = np.unique(scores[:, j], return_inverse=True)[1]
        self.u = int(ranks.max()) + 1 if n else 1
        self.flat = ranks + np.arange(k)[None, :] * self.u
        self.positive, self.k, self.own = positive, k, own
        self.correct = (scores[:own] >= thresholds[None, :]) == positive[:own, None]

    def _counts(self, w: np.ndarray, rows: np.ndarray) -> np.ndarray:
        flat = self.flat[rows].ravel()
        weights = np.repeat(w[rows], self.k)
        return np.bincount(flat, weights, self.k * self.u).reshape(self.k, self.u)

    def metrics(self, w: np.ndarray, fpr: float) -> dict[str, np.ndarray]:
        pos_rows, neg_rows = np.flatnonzero(self.positive), np.flatnonzero(~self.positive)
        wp, wn = w[pos_rows].sum(), w[neg_rows].sum()
        out = {"accuracy": (w[: self.own, None] * self.correct).sum(0) / w[: self.own].sum()}
        if wp == 0 or wn == 0:
            out["auroc"] = out["tpr_at_1fpr"] = np.full(self.k, math.nan)
            return out
        pos, neg = self._counts(w, pos_rows), self._counts(w, neg_rows)
        below = np.cumsum(neg, axis=1) - neg
        out["auroc"] = (pos * (below + 0.5 * neg)).sum(1) / (wp * wn)
        cut = int(math.floor(fpr * wn + 1e-9))  # negatives that may be flagged
        if cut >= wn:
            out["tpr_at_1fpr"] = np.ones(self.k)
            return out
        neg_ge = np.cumsum(neg[:, ::-1], axis=1)[:, ::-1]  # weight of negatives at or above rank r
        top = (neg_ge >= cut + 1).sum(1) - 1  # the rank of the (cut + 1)-th highest negative
        pos_ge = np.concatenate(
            [np.cumsum(pos[:, ::-1], axis=1)[:, ::-1], np.zeros((self.k, 1))], 1
        )
        out["tpr_at_1fpr"] = pos_ge[np.arange(self.k), top + 1] / wp
        return out


def paired_deltas(
    p: Paired, fpr: float = 0.01, bootstrap: int = 1000, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per metric: ``(delta [L], replicates [bootstrap, L])`` of probe − text on ``p``."""
    own, own_pos, ref, ref_pos, thresholds = stack_rows(p)
    scores = np.concatenate([own, ref])
    positive = np.concatenate([own_pos, ref_pos])
    whole = column_metrics(own, own_pos, ref, ref_pos, thresholds, fpr)
    weighted = _Weighted(scores, positive, len(own), thresholds)
    rng = np.random.default_rng(seed)
    reps = {m: np.empty((bootstrap, own.shape[1] - 1)) for m in METRICS}
    for b in range(bootstrap):
        i, j = resample(rng, len(own), len(ref))
        w = np.concatenate([np.bincount(i, minlength=len(own)), np.bincount(j, minlength=len(ref))])
        got = weighted.metrics(w.astype(np.float64), fpr)
        for m in METRICS:
            reps[m][b] = got[m][:-1] - got[m][-1]
    return {m: (whole[m][:-1] - whole[m][-1], reps[m]) for m in METRICS}


def resample(rng: np.random.Generator, n_own: int, n_ref: int) -> tuple[np.ndarray, np.ndarray]:
    """One bootstrap draw: the test set's rows and the reference rows, each resampled on its own."""
    i = rng.integers(0, n_own, n_own)
    j = rng.integers(0, n_ref, n_ref) if n_ref else np.zeros(0, np.int64)
    return i, j


def stack_rows(p: Paired) -> tuple[np.ndarray, ...]:
    """Own rows ``[n, L + 1]`` (probe layers, then text), their truth, the other-class reference rows
    (for a one-class set), theirs, and the thresholds ``[L + 1]``."""
    own = np.column_stack([np.asarray(p.states, np.float64), np.asarray(p.text, np.float64)])
    own_pos = np.asarray(p.positive, bool)
    thresholds = np.append(np.asarray(p.threshold, np.float64), p.text_threshold)
    ref = np.zeros((0, own.shape[1]))
    ref_pos = np.zeros(0, bool)
    if p.reference is not None and len(own_pos) and (own_pos.all() or not own_pos.any()):
        r_states, r_text, r_pos = p.reference
        other = np.asarray(r_pos, bool) != own_pos[0]
        ref = np.column_stack([np.asarray(r_states, np.float64), np.asarray(r_text, np.float64)])
        ref, ref_pos = ref[other], np.asarray(r_pos, bool)[other]
    return own, own_pos, ref, ref_pos, thresholds


def mean_deltas(
    parts: Sequence[dict[str, tuple[np.ndarray, np.ndarray]]],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The mean difference over several test sets, its replicates the means of theirs (independent
    resamples of each set, equal counts)."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a metric undefined on every set: NaN
        for m in METRICS:
            out[m] = (
                np.nanmean(np.stack([d[m][0] for d in parts]), axis=0),
                np.nanmean(np.stack([d[m][1] for d in parts]), axis=0),
            )
    return out


def delta_rows(
    deltas: dict[str, tuple[np.ndarray, np.ndarray]],
    layers: Sequence[int],
    extra: dict[str, Any],
) -> list[dict[str, Any]]:
    """Rows ``layer, metric, delta, low, high`` (+ ``extra``): the 2.5th and 97.5th percentiles."""
    rows = []
    for m, (delta, reps) in deltas.items():
        finite = np.isfinite(reps)
        for j, layer in enumerate(layers):
            col = reps[finite[:, j], j]
            low, high = np.percentile(col, [2.5, 97.5]) if len(col) else (math.nan, math.nan)
            rows.append(
                {**extra, "layer": int(layer), "metric": m, "delta": float(delta[j]),
                 "low": float(low), "high": float(high)}
            )  # fmt: skip
    return rows


def verdict(row: dict[str, Any]) -> str:
    """``beat`` (interval above 0), ``lose`` (below 0), ``match`` (straddles 0) or ``-`` (undefined)."""
    low, high = row["low"], row["high"]
    if math.isnan(low) or math.isnan(high):
        return "-"
    return "beat" if low > 0 else "lose" if high < 0 else "match"


def ranges(layers: Sequence[int]) -> str:
    """``0–3, 7, 9–12``; ``none`` for an empty list."""
    layers = sorted(layers)
    if not layers:
        return "none"
    parts, start, prev = [], layers[0], layers[0]
    for x in [*layers[1:], None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}")
        if x is not None:
            start = prev = x
    return ", ".join(parts)


def sentence(
    rows: Sequence[dict[str, Any]], probe: str, metric: str = "auroc", where: str = ""
) -> str:
    """One plain sentence: at which layers ``probe`` beats, matches or loses to the words."""
    by = {"beat": [], "match": [], "lose": []}
    for r in rows:
        if r["probe"] == probe and r["metric"] == metric and verdict(r) in by:
            by[verdict(r)].append(int(r["layer"]))
    if not any(by.values()):
        return f"{probe} vs the words ({metric}{where}): no comparison (undefined metric)."
    return (
        f"{probe} vs the words ({metric}{where}, paired bootstrap 95 % interval of the difference): "
        f"the states beat the words at layers {ranges(by['beat'])}, match them at "
        f"{ranges(by['match'])} and lose to them at {ranges(by['lose'])}."
    )


def write_above_words(rows: Sequence[dict[str, Any]], directory: Path) -> Path:
    """``directory/above_words.csv``."""
    return write_csv(Path(directory) / CSV_NAME, rows, COLUMNS, digits=".4f")
