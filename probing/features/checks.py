"""Checks of a feature file's contents: when it is opened (links, layout, labels, rows written) and
before its activations are scored (finite values). A damaged, hand-edited or hostile file then fails
with one line naming the file and rows, not with a traceback from h5py, sklearn or torch, and never
reads data from another file than its own (a merged file's shards in its folder aside)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import h5py
import numpy as np

from probing.errors import ProbingError

REQUIRED_ATTRS = ("num_layers", "num_positions", "hidden_size", "label_names")
REQUIRED_DATASETS = ("hidden", "label", "rows_done")
# per-row datasets: one entry per row of ``hidden`` (``lens_*`` are zero-width without a lens)
PER_ROW = ("label", "prompt_index", "source", "n_tokens", "truncated", "prompt", "rendered")
PER_ROW_BLOCKS = ("lens_ids", "lens_logits")


def format_rows(rows: np.ndarray, limit: int = 8) -> str:
    rows = np.asarray(rows).ravel()
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f", … ({len(rows)} rows)" if len(rows) > limit else "")


def damaged(path: Any, what: str) -> ProbingError:
    return ProbingError(f"{path}: {what}; the file is damaged or was edited: re-extract it")


def shard_files(path: Path, meta: dict[str, Any]) -> list[str]:
    """A merged file's ``shards`` attribute: paths relative to its folder, each inside it (else refused)."""
    shards = meta.get("shards") or []
    if not isinstance(shards, list) or not all(isinstance(s, str) and s for s in shards):
        raise damaged(path, f"its 'shards' attribute is {shards!r}, not a list of file names")
    for rel in shards:
        parts = PurePosixPath(rel)
        if parts.is_absolute() or ".." in parts.parts or "\\" in rel:
            raise ProbingError(
                f"{path} is a merged file whose shard {rel!r} lies outside its folder {path.absolute().parent}; "
                "only shards in the merged file's folder are read: keep the shards beside it and "
                "merge them again with `probing merge`"
            )
    return shards


def check_links(path: Path, f: h5py.File, meta: dict[str, Any]) -> list[str]:
    """Refuse links and virtual datasets that read anything but a merge's own shards; returns the
    shards that are missing (their rows would read as zeros)."""
    shards = shard_files(path, meta)
    for name in f:
        link = f.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            target = getattr(link, "filename", None) or getattr(link, "path", "")
            raise ProbingError(
                f"{path}: {name!r} is a link ({type(link).__name__} to {target}), not data of the "
                "file; feature files hold their own data (a merged file reads only its shards): "
                "re-extract it"
            )
        obj = f[name]
        if not (isinstance(obj, h5py.Dataset) and obj.is_virtual):
            continue
        for source in obj.virtual_sources():
            if source.file_name not in shards:
                raise ProbingError(
                    f"{path}: dataset {name!r} reads {source.file_name!r}, which is not one of its "
                    f"shards {shards}; a feature file reads only its own data and its shards: "
                    "re-extract it or merge the shards again with `probing merge`"
                )
    return [rel for rel in shards if not (path.parent / rel).exists()]


def check_layout(path: Path, f: h5py.File, meta: dict[str, Any]) -> None:
    """``hidden`` is ``[N, num_layers, num_positions, hidden_size]`` as the metadata says, every
    per-row dataset has N rows, labels index ``label_names``, and ``complete`` agrees with
    ``rows_done``."""
    missing = [k for k in REQUIRED_ATTRS if k not in meta]
    missing += [k for k in REQUIRED_DATASETS if not isinstance(f.get(k), h5py.Dataset)]
    if missing:
        raise damaged(path, f"it has no {', '.join(missing)}")
    names = meta["label_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise damaged(path, f"its label_names {names!r} is not a list of class names")
    positions = meta.get("position_names")
    if positions is not None and (
        not isinstance(positions, list)
        or len(positions) != int(meta["num_positions"])
        or len(set(map(str, positions))) != len(positions)
    ):
        raise damaged(
            path,
            f"its position_names {positions!r} is not a list of {meta['num_positions']} distinct "
            "names (num_positions)",
        )
    offsets = meta.get("position_offsets")
    if offsets is not None and (
        not isinstance(offsets, list)
        or len(offsets) != int(meta["num_positions"])
        or not all(o is None or (isinstance(o, int) and o >= 0) for o in offsets)
    ):
        raise damaged(
            path,
            f"its position_offsets {offsets!r} is not a list of {meta['num_positions']} token "
            "offsets (integers >= 0, or null for the mean)",
        )
    hidden = f["hidden"]
    want = tuple(int(meta[k]) for k in ("num_layers", "num_positions", "hidden_size"))
    if hidden.ndim != 4 or tuple(hidden.shape[1:]) != want:
        raise damaged(
            path,
            f"its activations have shape {tuple(hidden.shape)} but its metadata says "
            f"[N, {want[0]}, {want[1]}, {want[2]}] (num_layers, num_positions, hidden_size)",
        )
    n = hidden.shape[0]
    for name in PER_ROW + PER_ROW_BLOCKS:
        ds = f.get(name)
        if ds is None:
            continue
        rows = ds.shape[:1] if isinstance(ds, h5py.Dataset) and ds.ndim else None
        if rows != (n,) or (name in PER_ROW and ds.ndim != 1):
            shape = ds.shape if isinstance(ds, h5py.Dataset) else type(ds).__name__
            want = f"({n},)" if name in PER_ROW else f"({n}, …)"
            raise damaged(
                path, f"dataset {name!r} has shape {shape}, expected {want} like its activations"
            )
    done = f["rows_done"]
    if done.shape != (1,) or done.dtype.kind not in "iu" or not 0 <= int(done[0]) <= n:
        raise damaged(path, f"its rows_done {done[()]!r} is not a row count of 0..{n}")
    if meta.get("complete") and int(done[0]) != n:
        raise damaged(path, f"it says it is complete but holds {int(done[0])} of {n} rows")
    labels = f["label"]
    if labels.dtype.kind not in "iu":
        raise damaged(path, f"its labels are {labels.dtype}, not class indices")
    labels = labels[:]
    bad = np.flatnonzero((labels < 0) | (labels >= len(names)))
    if len(bad):
        raise damaged(
            path,
            f"rows {format_rows(bad)} have labels {format_rows(labels[bad], 3)} outside its "
            f"{len(names)} label_names {names}",
        )


def check_finite(x: np.ndarray, rows: np.ndarray, path: Any, layer: int | None = None) -> None:
    """``x`` ``[B, ...]`` holds the activations of file rows ``rows`` (of one ``layer`` when given):
    refuse NaN/inf naming the rows (and the layer, which ``--data.layers`` can leave out)."""
    bad = ~np.isfinite(np.asarray(x).reshape(len(x), -1)).all(axis=1)
    if bad.any():
        where = "" if layer is None else f" at layer {layer}"
        instead = "use another file" if layer is None else "leave the layer out with --data.layers"
        raise ProbingError(
            f"{path}: rows {format_rows(np.asarray(rows)[bad])} hold non-finite (NaN/inf) "
            f"activations{where}; re-extract them (--storage_dtype float32 if float16 overflowed) "
            f"or {instead}"
        )
