"""What ``probing directions`` writes: ``directions.csv``, ``directions.npz`` and ``directions.png``.

Every file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from probing.directions.compute import Directions
from probing.plotting import save_figure, subplots
from probing.tables import write_csv

CSV_NAME = "directions.csv"
NPZ_NAME = "directions.npz"
PLOT_NAME = "directions.png"
COLUMNS = ("layer", "position", "label_set", "auroc", "rows", "positives", "test_rows",
           "test_positives", "norm")  # fmt: skip


def columns(result: Directions) -> list[str]:
    """:data:`COLUMNS` then ``cosine_<label set>`` for every label set."""
    return [*COLUMNS, *(f"cosine_{name}" for name in result.label_sets)]


def rows(result: Directions) -> list[dict[str, Any]]:
    """One row per label set, position and layer; ``cosine_<other>`` for every other label set
    (its own cosine column is left empty)."""
    out = []
    for s, name in enumerate(result.label_sets):
        for p, position in enumerate(result.positions):
            for j, layer in enumerate(result.layers):
                row: dict[str, Any] = {
                    "layer": layer,
                    "position": position,
                    "label_set": name,
                    "auroc": float(result.auroc[s, p, j]),
                    "rows": result.rows[s],
                    "positives": result.positives[s],
                    "test_rows": result.test_rows[s],
                    "test_positives": result.test_positives[s],
                    "norm": float(result.norm[s, p, j]),
                }
                for o, other in enumerate(result.label_sets):
                    if o != s:
                        row[f"cosine_{other}"] = float(result.cosine[s, o, p, j])
                out.append(row)
    return out


def _replace_when_written(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def write_table(result: Directions, directory: Path) -> Path:
    """``directory/directions.csv``."""
    return write_csv(directory / CSV_NAME, rows(result), columns(result), digits=".4f")


def write_arrays(result: Directions, directory: Path) -> Path:
    """``directions [S, P, L, D]`` float32, ``auroc``/``norm`` ``[S, P, L]``, ``cosine [S, S, P, L]``,
    ``label_sets``/``positions`` (strings) and ``layers`` (ints): plain arrays, no pickle."""
    path = directory / NPZ_NAME
    tmp = _replace_when_written(path)
    with open(tmp, "wb") as f:
        np.savez(
            f,
            directions=result.directions.astype(np.float32),
            auroc=result.auroc,
            norm=result.norm,
            cosine=result.cosine,
            label_sets=np.asarray(result.label_sets, dtype=str),
            positions=np.asarray(result.positions, dtype=str),
            layers=np.asarray(result.layers, dtype=np.int64),
        )
    os.replace(tmp, path)
    return path


def plot(result: Directions, directory: Path, title: str) -> Path:
    """Held-out AUROC of the projection, one panel per label set: positions × layers."""
    layers, positions = result.layers, result.positions
    n = len(result.label_sets)
    fig, axes = subplots(
        n, 1, figsize=(max(6, 0.3 * len(layers) + 3), 1.3 + (0.35 * len(positions) + 1.2) * n),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for s, ax in enumerate(axes[:, 0]):
        im = ax.imshow(result.auroc[s], aspect="auto", cmap="RdYlGn", vmin=0, vmax=1)
        ax.set_yticks(range(len(positions)), positions, fontsize=7)
        ax.set_xticks(range(len(layers)), [str(x) for x in layers], fontsize=6)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel("position")
        ax.set_title(
            f"{result.label_sets[s]}: held-out AUROC of the difference-in-means projection",
            fontsize=9,
        )
        fig.colorbar(im, ax=ax, fraction=0.03)
    fig.suptitle(title, fontsize=10)
    path = directory / PLOT_NAME
    tmp = save_figure(fig, _replace_when_written(path))
    os.replace(tmp, path)
    return path


def best(result: Directions, label_set: str) -> tuple[int, str, float]:
    """``(layer, position, auroc)`` where the label set's direction separates the test rows best."""
    s = result.label_sets.index(label_set)
    grid = np.where(np.isnan(result.auroc[s]), -np.inf, result.auroc[s])
    p, j = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return result.layers[j], result.positions[p], float(result.auroc[s, p, j])


def sentences(result: Directions) -> list[str]:
    """One plain sentence per label set: where its direction separates best."""
    out = []
    for s, name in enumerate(result.label_sets):
        layer, position, auc = best(result, name)
        out.append(
            f"label set {name}: its difference-in-means direction separates the held-out rows best "
            f"at layer {layer}, position {position} (AUROC {auc:.3f} on {result.test_rows[s]} rows, "
            f"{result.test_positives[s]} positive)"
        )
    return out
