"""The rows of one or more feature files, grouped by prompt source, as one in-memory block.

Every file must come from the same model and extraction settings (``probing.features.identity``). Each row keeps
its prompt source's name (``probing info`` lists them); a name used in two files is qualified with the
file's stem (``stem:name``). Labels are mapped through ``class_map`` and must fall in ``classes`` (binary:
the first is the negative class, the second the harmful one); rows of other classes are dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from probing.data.selection import class_indices, stratified_split
from probing.errors import ProbingError
from probing.features.identity import require_same_identity
from probing.features.labels import read_label_set
from probing.features.positions import resolve_position
from probing.features.store import FeatureFile
from probing.layers import LayerSpec, resolve_layers

log = logging.getLogger(__name__)


@dataclass
class SourceBlock:
    """Activations ``x [N, L, D]`` (float32), binary labels ``y [N]``, the source name and the prompt
    of each row (the text baseline's input)."""

    x: torch.Tensor
    y: np.ndarray
    source: np.ndarray
    layers: list[int]
    meta: dict
    prompts: np.ndarray

    @property
    def source_names(self) -> list[str]:
        return list(dict.fromkeys(self.source.tolist()))

    def rows_of(self, names: Sequence[str]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.source, list(names)))


def check_same_extraction(files: Sequence[FeatureFile]) -> None:
    """Every file from the first one's model and prompt format (the one identity rule)."""
    first = files[0]
    for ff in files[1:]:
        require_same_identity(
            first.meta, ff.meta,
            "--features: {path} comes from another model or extraction than {first} "
            "({key}={b!r} there, {a!r} here); give files of one model and settings",
            path=ff.path, first=first.path,
        )  # fmt: skip


def load_block(
    paths: Sequence[str],
    classes: Sequence[str],
    class_map: dict[str, str] | None = None,
    layers: LayerSpec = "all",
    position: int | str = -1,
    memory_limit_gb: float = 8.0,
    label: str = "label",
) -> SourceBlock:
    """Rows of ``classes`` of the label set ``label`` from every file in ``paths``, with their
    source names."""
    if not paths:
        raise ProbingError("--features is empty; give one or more feature files (.h5)")
    if len(classes) != 2 or len(set(classes)) != 2:
        raise ProbingError(
            f"--classes must name two classes [negative, harmful], got {list(classes)}"
        )
    class_map = dict(class_map or {})
    files = [FeatureFile(p) for p in paths]
    check_same_extraction(files)
    chosen = resolve_layers(layers, files[0].num_layers, "--layers", str(files[0].path))
    picked, known = [], {}
    for ff in files:
        values, names = read_label_set(ff, label, "--label")
        known.update(dict.fromkeys(class_map.get(n, n) for n in names))
        y = class_indices(values, names, list(classes), class_map)
        keep = np.flatnonzero(y >= 0)
        names = ff.source_names
        src = np.asarray([names[int(i)] for i in ff.sources[keep]], dtype=object)
        picked.append((ff, keep, y[keep], src))
    missing = [c for c in classes if c not in known]
    if missing:
        raise ProbingError(
            f"--classes {list(classes)}: {missing} is not a class of the label set {label!r} (the "
            f"files have {list(known)}); change --classes, --class_map or --label"
        )
    counts = Counter(n for _, _, _, src in picked for n in set(src.tolist()))
    total = sum(len(k) for _, k, _, _ in picked)
    need = total * len(chosen) * files[0].hidden_size * 4 / 1e9
    if need > memory_limit_gb:
        raise ProbingError(
            f"the selected rows need {need:.1f} GB in memory (limit {memory_limit_gb} GB): choose fewer "
            "--layers or raise --memory_limit_gb"
        )
    xs, ys, sources, prompts = [], [], [], []
    for ff, keep, y, src in picked:
        if not len(keep):
            log.warning("%s has no rows of the classes %s; skipped", ff.path, list(classes))
            continue
        if len(files) > 1:
            src = np.asarray(
                [f"{Path(ff.path).stem}:{n}" if counts[n] > 1 else n for n in src], dtype=object
            )
        index = resolve_position(ff.meta, position, "--position", ff.path)
        x = ff.layers(chosen, position=index)[keep]
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x).all(axis=(1, 2)))
            raise ProbingError(
                f"{ff.path} has NaN/inf activations in {len(bad)} row(s) (first file rows "
                f"{keep[bad[:5]].tolist()}); re-extract it (--storage_dtype float32) or drop layers"
            )
        xs.append(torch.from_numpy(x))
        ys.append(y)
        sources.append(src)
        prompts.append(np.asarray(ff.column("prompt"), dtype=object)[keep])
        ff.close()
    if not xs:
        raise ProbingError(
            f"no rows of the classes {list(classes)} in {list(paths)}; check --classes"
        )
    block = SourceBlock(
        torch.cat(xs), np.concatenate(ys), np.concatenate(sources), chosen, files[0].meta,
        np.concatenate(prompts),
    )  # fmt: skip
    summary = ", ".join(
        f"{n} ({(block.source == n).sum()} rows, {classes[int(block.y[block.source == n][0])]}"
        + ("+" if len(set(block.y[block.source == n].tolist())) > 1 else "")
        + ")"
        for n in block.source_names
    )
    log.info("sources: %s", summary)
    return block


def split_rows(
    y: np.ndarray, source: np.ndarray, rows: np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Split ``rows`` into parts with ``fractions``, stratified by (source, class)."""
    strata = np.asarray([f"{source[r]}\0{int(y[r])}" for r in rows], dtype=object)
    _, ids = np.unique(strata, return_inverse=True)
    return [rows[part] for part in stratified_split(ids, fractions, seed)]
