"""Difference-in-means directions and how well their projection separates held-out rows.

For a label set, layer and stored position the direction is ``mean(x | positive) - mean(x | negative)``
over the *train* part of the label set's rows, on the raw hidden states (the model's own basis: the
vector can be added to or projected out of the residual stream as it is). Its AUROC is that of the
projection ``x · direction`` of the *test* part (a stratified split with a seed), so it is not
in-sample. The cosine between two label sets' directions compares them at the same layer and position.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from probing.data.selection import stratified_split
from probing.directions.labels import LabelSet
from probing.errors import ProbingError
from probing.features.store import FeatureFile
from probing.probes.auroc import auroc_columns


@dataclass(frozen=True)
class Split:
    """File rows of a label set's train and test parts."""

    train: np.ndarray
    test: np.ndarray


@dataclass
class Directions:
    """``directions [S, P, L, D]`` (train-part difference in means), ``auroc [S, P, L]`` (held-out),
    ``norm [S, P, L]`` (the direction's length: the distance between the class means) and
    ``cosine [S, S, P, L]`` (NaN where a direction is zero), for label sets S, positions P, layers L."""

    label_sets: list[str]
    positions: list[str]
    layers: list[int]
    directions: np.ndarray
    auroc: np.ndarray
    norm: np.ndarray
    cosine: np.ndarray
    rows: list[int]
    positives: list[int]
    test_rows: list[int]
    test_positives: list[int]


def split_label_set(s: LabelSet, test_fraction: float, seed: int) -> Split:
    """A stratified train/test split of the label set's rows; both parts must hold both classes."""
    rows = s.rows
    y = s.values[rows]
    train, test = stratified_split(y, [1 - test_fraction, test_fraction], seed)
    for part, name in ((train, "train"), (test, "test")):
        counts = np.bincount(y[part], minlength=2)
        if counts.min() == 0:
            raise ProbingError(
                f"label set {s.name!r} has too few rows for a held-out split: {s.negatives} negative "
                f"and {s.positives} positive rows leave its {name} part with {counts[0]} negative and "
                f"{counts[1]} positive rows at --test_fraction {test_fraction}; change --test_fraction "
                "or give more rows"
            )
    return Split(rows[train], rows[test])


def fit_and_score(x: np.ndarray, y: np.ndarray, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """``x [N, L, D]``, ``y [N]`` (1/0/-1) → directions ``[L, D]`` from the train rows and the test
    rows' projection AUROC ``[L]``."""
    train = x[split.train].astype(np.float64)
    ytr = y[split.train]
    direction = train[ytr == 1].mean(0) - train[ytr == 0].mean(0)
    scores = np.einsum("nld,ld->nl", x[split.test].astype(np.float64), direction)
    return direction, auroc_columns(scores, y[split.test] == 1)


def cosines(directions: np.ndarray) -> np.ndarray:
    """``directions [S, P, L, D]`` → ``[S, S, P, L]`` cosines (NaN where either is zero)."""
    norm = np.linalg.norm(directions, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = directions / norm[..., None]
    cos = np.einsum("apld,bpld->abpl", unit, unit)
    zero = norm == 0
    cos[zero[:, None] | zero[None, :]] = math.nan
    return np.clip(cos, -1.0, 1.0)


def compute(
    ff: FeatureFile,
    sets: Sequence[LabelSet],
    splits: Sequence[Split],
    layers: list[int],
    positions: dict[str, int],
    visit: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
) -> Directions:
    """Every label set's direction and held-out AUROC at every chosen layer and position.
    ``visit(p, block [N, L, D], directions [S, L, D])`` is called once per position after its
    directions are fitted (the block is read once)."""
    shape = (len(sets), len(positions), len(layers))
    dirs = np.zeros((*shape, ff.hidden_size), np.float32)
    auroc = np.full(shape, math.nan)
    for p, (name, index) in enumerate(positions.items()):
        x = ff.layers(layers, position=index)
        bad = ~np.isfinite(x).all(axis=(1, 2))
        if bad.any():
            raise ProbingError(
                f"{ff.path} has NaN/inf activations at position {name!r} in {int(bad.sum())} row(s) "
                f"(first {np.flatnonzero(bad)[:5].tolist()}); re-extract it (--storage_dtype float32) "
                "or choose other --layers"
            )
        for s, (label_set, split) in enumerate(zip(sets, splits, strict=True)):
            d, a = fit_and_score(x, label_set.values, split)
            dirs[s, p], auroc[s, p] = d, a
        if visit is not None:
            visit(p, x, dirs[:, p])
    test_y = [ls.values[sp.test] for ls, sp in zip(sets, splits, strict=True)]
    return Directions(
        label_sets=[s.name for s in sets],
        positions=list(positions),
        layers=list(layers),
        directions=dirs,
        auroc=auroc,
        norm=np.linalg.norm(dirs.astype(np.float64), axis=-1),
        cosine=cosines(dirs.astype(np.float64)),
        rows=[len(s.rows) for s in sets],
        positives=[s.positives for s in sets],
        test_rows=[len(y) for y in test_y],
        test_positives=[int((y == 1).sum()) for y in test_y],
    )
