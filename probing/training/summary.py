"""The few lines `probing fit` ends with: the run folder, each probe's best layer, the files written."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from probing.probes.report import CSV_NAME, JSON_NAME, PLOT_NAME

# what a fit (with its test) writes into the run folder, in the order a newcomer reads them
RUN_FILES = (
    CSV_NAME,
    JSON_NAME,
    PLOT_NAME,
    "per_source_metrics.csv",
    "above_words.csv",
    "config.yaml",
)


def best_layers(
    run_dir: Path, fallback: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Mapping[str, Any]]:
    """``best_layer_on_val`` of the run's metrics JSON (with the test accuracy), else ``fallback``
    (the module's validation-only best layers, when the fit was not tested)."""
    path = run_dir / JSON_NAME
    if path.is_file():
        best = json.loads(path.read_text()).get("best_layer_on_val")
        if best:
            return best
    return fallback


def fit_summary(
    run_dir: Path, best: Mapping[str, Mapping[str, Any]], checkpoint: str | None
) -> str:
    """``best`` maps each probe to its ``layer`` and ``<split>_accuracy`` values."""
    lines = [f"done: run folder {run_dir}"]
    for name, info in best.items():
        accs = ", ".join(
            f"{key.removesuffix('_accuracy')} acc {value:.3f}"
            for key, value in info.items()
            if key.endswith("_accuracy") and isinstance(value, (int, float))
        )
        lines.append(f"  {name}: best layer on val {info['layer']} ({accs})")
    files = [name for name in RUN_FILES if (run_dir / name).is_file()]
    if files:
        lines.append(f"  files: {', '.join(files)}")
    if checkpoint:
        lines.append(f"  best checkpoint: {checkpoint}")
    return "\n".join(lines)
