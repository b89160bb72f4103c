"""Per-layer metrics files and the accuracy-per-layer plot, shared by probes and weak classifiers.

``per_layer_metrics.csv`` has the columns ``layer,probe,split,accuracy,f1,auroc`` (plus
``accuracy_lo,accuracy_hi`` when a bootstrap interval was asked for); ``per_layer_metrics.json`` holds
the same rows with run information (classes, best layers, the feature file's metadata). A scorer of no
layer, the text baseline (``probe = text``), has an empty ``layer`` cell and is drawn as a dashed
reference line.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from probing.errors import ProbingError
from probing.plotting import save_figure, subplots
from probing.tables import write_csv

log = logging.getLogger(__name__)

COLUMNS = ("layer", "probe", "split", "accuracy", "f1", "auroc")
CI_COLUMNS = ("accuracy_lo", "accuracy_hi")
CSV_NAME, JSON_NAME, PLOT_NAME = (
    "per_layer_metrics.csv",
    "per_layer_metrics.json",
    "accuracy_per_layer.png",
)
# Provenance copied from the feature file into reports (the long `config` attribute is left out).
META_KEYS = (
    "model", "model_source", "model_revision", "gguf_sha256", "architecture", "dtype", "storage_dtype",
    "num_layers", "hidden_size", "template", "system_prompt", "positions", "num_positions",
    "label_names", "sources", "prompt_hash", "fingerprint", "created", "probing_version",
)  # fmt: skip


def layer_name(layer: int) -> str:
    """``layer_07``: the absolute layer index of the feature file (0 = embeddings)."""
    return f"layer_{layer:02d}"


def provenance(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in META_KEYS if k in meta}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(
    run_dir: str | os.PathLike, rows: Sequence[dict[str, Any]], info: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``per_layer_metrics.csv`` and its JSON twin into ``run_dir``; returns both paths."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    columns = list(COLUMNS) + [c for c in CI_COLUMNS if any(c in r for r in rows)]
    csv_path, json_path = run_dir / CSV_NAME, run_dir / JSON_NAME
    write_csv(csv_path, rows, columns)
    payload = {
        **(info or {}),
        "columns": columns,
        "rows": [{k: _clean(r.get(k)) for k in columns} for r in rows],
    }
    json_path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return csv_path, json_path


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``per_layer_metrics.csv`` (or of the CSV inside a run directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / CSV_NAME
    if not path.is_file():
        raise ProbingError(f"no per-layer metrics at {path}; give a {CSV_NAME} or a run directory")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ProbingError(f"{path} lacks the columns {sorted(missing)}; is it a {CSV_NAME}?")
        rows = []
        for raw in reader:
            row: dict[str, Any] = {
                "layer": int(raw["layer"]) if raw["layer"] not in ("", None) else None,
                "probe": raw["probe"],
                "split": raw["split"],
            }
            for key in (*COLUMNS[3:], *CI_COLUMNS):
                if key in raw:
                    row[key] = float(raw[key]) if raw[key] not in ("", None) else float("nan")
            rows.append(row)
    return rows


def plot_accuracy(
    rows: Iterable[dict[str, Any]],
    path: str | os.PathLike,
    title: str = "",
    split: str | None = None,
) -> Path:
    """Accuracy per layer, one line per probe (the paper's Figure 3 style); saves a PNG."""
    rows = [r for r in rows if split is None or r["split"] == split]
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = row["probe"] if split is not None else f"{row['probe']} ({row['split']})"
        series.setdefault(key, []).append(row)
    fig, ax = subplots(figsize=(7, 4))
    markers = "osD^v<>ph*"
    for i, (name, pts) in enumerate(sorted(series.items())):
        if all(p["layer"] is None for p in pts):  # the text baseline: a level, not a curve
            ax.axhline(pts[0]["accuracy"], color=f"C{i % 10}", linestyle="--", linewidth=1.2,
                       label=f"{name}: {pts[0]['accuracy']:.3f}")  # fmt: skip
            continue
        pts = sorted((p for p in pts if p["layer"] is not None), key=lambda r: r["layer"])
        xs = [p["layer"] for p in pts]
        ys = [p["accuracy"] for p in pts]
        line = ax.plot(
            xs, ys, marker=markers[i % len(markers)], markersize=3.5, linewidth=1.4, label=name
        )
        if all("accuracy_lo" in p for p in pts):
            lo = [p["accuracy_lo"] for p in pts]
            hi = [p["accuracy_hi"] for p in pts]
            ax.fill_between(xs, lo, hi, color=line[0].get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def comparison_rows(
    paths: Sequence[str | os.PathLike], split: str | None = None
) -> list[dict[str, Any]]:
    """Rows of other runs' metrics to overlay on a plot (e.g. the weak classifiers)."""
    rows: list[dict[str, Any]] = []
    for p in paths:
        rows += [r for r in read_metrics(p) if split is None or r["split"] == split]
    return rows


def metric_rows(
    results: dict[str, dict[str, list[float]]], layers: Sequence[int], split: str
) -> list[dict[str, Any]]:
    """One row per (probe, layer) of per-probe metric lists ``{probe: {metric: [L values]}}``."""
    rows = []
    for name, values in results.items():
        for j, layer in enumerate(layers):
            row = {"layer": layer, "probe": name, "split": split}
            row.update({k: v[j] for k, v in values.items()})
            rows.append(row)
    return rows


def write_report(
    run_dir: str | os.PathLike,
    rows: Sequence[dict[str, Any]],
    info: dict[str, Any],
    split: str,
    title: str = "",
    compare_with: Sequence[str | os.PathLike] = (),
) -> tuple[Path, Path, Path]:
    """A probe run's metrics files and plot; returns the three paths.

    The plot shows the rows of ``split`` and the non-validation rows of the ``compare_with`` runs;
    ``info["best_layer_on_val"]`` maps each probe to its ``layer``, ``val_accuracy`` and
    ``<split>_accuracy``.
    """
    csv_path, json_path = write_metrics(run_dir, rows, info)
    others = [r for r in comparison_rows(compare_with) if r["split"] != "val"]
    plot_rows = [r for r in rows if r["split"] == split] + others
    png = plot_accuracy(plot_rows, Path(run_dir) / PLOT_NAME, title=title)
    log.info("per-layer metrics: %s, %s; plot: %s", csv_path, json_path, png)
    # the best layers are the command's closing summary (probing.training.summary), said once
    return csv_path, json_path, png
