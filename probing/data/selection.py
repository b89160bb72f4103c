"""Which classes and rows a data module uses: class resolution, stratified splits (its layers:
:mod:`probing.layers`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from probing.errors import ProbingError


def resolve_classes(
    label_names: Sequence[str],
    present: Sequence[str],
    classes: Sequence[str] | None,
    class_map: dict[str, str] | None,
    known: Sequence[str] = (),
    what: str = "the feature file",
) -> list[str]:
    """The selected class names (order = class index) after mapping; checks the options. ``what``
    has the classes (for messages: another label set than the file's classes)."""
    class_map = dict(class_map or {})
    unknown = sorted(set(class_map) - set(label_names) - set(known))
    if unknown:
        raise ProbingError(
            f"--data.class_map maps {unknown}, which are not classes of {what} "
            f"(its classes: {list(label_names)})"
        )
    mapped_present = list(dict.fromkeys(class_map.get(n, n) for n in present))
    if classes is None:
        chosen = mapped_present
    else:
        chosen = list(classes)
        if len(set(chosen)) != len(chosen):
            raise ProbingError(f"--data.classes lists a class twice: {chosen}")
        mapped_all = {class_map.get(n, n) for n in (*label_names, *known)}
        for name in chosen:
            if name not in mapped_all:
                raise ProbingError(
                    f"--data.classes has {name!r}, which is not a class of {what} (its classes: "
                    f"{list(label_names)}; merge classes with --data.class_map)"
                )
            if name not in mapped_present:
                raise ProbingError(
                    f"--data.classes has {name!r} but the training feature file has no rows of it; "
                    "drop it or map another class onto it with --data.class_map"
                )
    if len([c for c in chosen if c in mapped_present]) < 2:
        raise ProbingError(
            f"--data.classes selects {chosen} but a probe needs rows of at least two classes "
            f"(the file has rows of {mapped_present})"
        )
    return chosen


def class_indices(
    label: np.ndarray, label_names: Sequence[str], classes: Sequence[str], class_map: dict
) -> np.ndarray:
    """Class index per row (``-1`` for rows outside the selection)."""
    lookup = np.array(
        [
            classes.index(class_map.get(n, n)) if class_map.get(n, n) in classes else -1
            for n in label_names
        ]
        + [-1],
        dtype=np.int64,
    )
    label = np.asarray(label, dtype=np.int64)
    label = np.where((label >= 0) & (label < len(label_names)), label, len(label_names))
    return lookup[label]


def stratified_split(y: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split row positions into parts with the given fractions, per class, shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    cum = np.cumsum(fractions)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        bounds = np.round(cum * len(idx)).astype(int)
        bounds[-1] = len(idx)
        start = 0
        for k, stop in enumerate(bounds):
            parts[k].append(idx[start:stop])
            start = stop
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def check_split(split: Sequence[float]) -> tuple[float, float, float]:
    split = tuple(float(s) for s in split)
    if len(split) != 3 or any(s < 0 for s in split) or abs(sum(split) - 1) > 1e-6:
        raise ProbingError(
            f"--data.split must be three non-negative fractions summing to 1, got {list(split)}"
        )
    if split[0] <= 0:
        raise ProbingError(f"--data.split={list(split)} has no training fraction")
    return split  # type: ignore[return-value]


def check_split_rows(
    split_pos: dict[str, np.ndarray],
    fractions: Sequence[float],
    names: Sequence[str],
    path: str,
) -> None:
    """Refuse a split among ``names`` whose ``--data.split`` fraction is above 0 but that holds no
    row (too few rows per class for it)."""
    for name in names:
        fraction = fractions[("train", "val", "test").index(name)]
        if fraction > 0 and len(split_pos[name]) == 0:
            rows = sum(len(p) for p in split_pos.values())
            what = "validation" if name == "val" else name
            raise ProbingError(
                f"--data.split={list(fractions)} leaves no {what} rows of the {rows} rows of "
                f"{path}; give more rows, or a {what} fraction of 0 in --data.split"
                + (" (training without validation)" if name == "val" else "")
            )


def held_mask(
    row_source: np.ndarray, holdout: Sequence[str], source_names: Sequence[str],
    class_names: Sequence[str], path: str,
) -> np.ndarray:  # fmt: skip
    """Which rows (by prompt-source index) belong to the held-out sources ``holdout``; each must be
    a source of the file with rows of the selected classes (``--data.holdout_sources``)."""
    unknown = [s for s in holdout if s not in source_names]
    if unknown:
        raise ProbingError(
            f"--data.holdout_sources names {unknown}, which are not prompt sources of {path} "
            f"(its sources: {list(source_names)}; `probing info` lists them)"
        )
    idx = [list(source_names).index(s) for s in holdout]
    for name, i in zip(holdout, idx, strict=True):
        if not (row_source == i).any():
            raise ProbingError(
                f"--data.holdout_sources: source {name!r} has no rows of the selected classes "
                f"{list(class_names)}"
            )
    return np.isin(row_source, idx)
