"""Checks of a feature file's contents before they are scored: shapes agree with the metadata, values
are finite. A damaged or hand-edited file then fails with one line naming the file and rows, not
with a traceback from sklearn or torch."""

from __future__ import annotations

from typing import Any

import numpy as np

from probing.errors import ProbingError


def format_rows(rows: np.ndarray, limit: int = 8) -> str:
    rows = np.asarray(rows).ravel()
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f", … ({len(rows)} rows)" if len(rows) > limit else "")


def check_shape(ff: Any) -> None:
    """``hidden`` is ``[N, num_layers, num_positions, hidden_size]`` and every per-row dataset has N
    rows, as the metadata says; labels index ``label_names``."""
    hidden = ff.file["hidden"]
    want = (ff.num_layers, ff.num_positions, ff.hidden_size)
    if hidden.ndim != 4 or tuple(hidden.shape[1:]) != want:
        raise ProbingError(
            f"{ff.path}: its activations have shape {tuple(hidden.shape)} but its metadata says "
            f"[N, {want[0]}, {want[1]}, {want[2]}] (num_layers, num_positions, hidden_size); the "
            "file is damaged or was edited: re-extract it"
        )
    n = hidden.shape[0]
    for name in ("label", "prompt_index", "source"):
        if name in ff.file and ff.file[name].shape != (n,):
            raise ProbingError(
                f"{ff.path}: dataset {name!r} has shape {ff.file[name].shape}, expected ({n},) "
                "like its activations; the file is damaged or was edited: re-extract it"
            )
    labels = ff.file["label"][:]
    bad = np.flatnonzero((labels < 0) | (labels >= len(ff.label_names)))
    if len(bad):
        raise ProbingError(
            f"{ff.path}: rows {format_rows(bad)} have labels outside its {len(ff.label_names)} "
            f"label_names; the file is damaged or was edited: re-extract it"
        )


def check_finite(x: np.ndarray, rows: np.ndarray, path: Any) -> None:
    """``x`` ``[B, ...]`` holds the activations of file rows ``rows``: refuse NaN/inf naming them."""
    bad = ~np.isfinite(np.asarray(x).reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise ProbingError(
            f"{path}: rows {format_rows(np.asarray(rows)[bad])} hold non-finite (NaN/inf) "
            "activations; re-extract them (--storage_dtype float32 if float16 overflowed) or use "
            "another file"
        )
