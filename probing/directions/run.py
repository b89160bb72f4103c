"""The directions run (``probing directions``): difference-in-means directions per layer, stored
position and label set, their held-out AUROC and the cosines between label sets (docs/directions.md).

Writes ``OUTPUT/directions.csv``, ``OUTPUT/directions.npz`` and ``OUTPUT/directions.png`` (with
``--locate``, ``located.csv`` and ``located.png`` too).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from probing.directions import locate as located
from probing.directions import report
from probing.directions.compute import Directions, compute, split_label_set
from probing.directions.config import DirectionsConfig
from probing.directions.labels import label_sets
from probing.errors import ProbingError
from probing.features.positions import position_names, resolve_position
from probing.features.store import FeatureFile
from probing.layers import resolve_layers

log = logging.getLogger(__name__)


def _positions(ff: FeatureFile, chosen: list[int | str] | None) -> dict[str, int]:
    """Name → stored index of each chosen position (all by default), in the order given."""
    names = position_names(ff.meta)
    if chosen is None:
        return {n: i for i, n in enumerate(names)}
    if not chosen:
        raise ProbingError(f"--positions is empty; give names or indices of {names}")
    indices = [resolve_position(ff.meta, p, "--positions", ff.path) for p in chosen]
    return {names[i]: i for i in dict.fromkeys(indices)}


def _check_output(output: str) -> Path:
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ProbingError(f"--output {out} is a file; give a folder")
    return out


def directions(cfg: DirectionsConfig) -> dict[str, Any]:
    """Validate, compute every direction, write the CSV, arrays and heatmap; return the result and
    the paths."""
    if not 0 < cfg.test_fraction < 1:
        raise ProbingError(
            f"--test_fraction must be strictly between 0 and 1 (e.g. 0.3), got {cfg.test_fraction}"
        )
    if cfg.bootstrap < 0:
        raise ProbingError(f"--bootstrap must be >= 0 (0 = no intervals), got {cfg.bootstrap}")
    out = _check_output(cfg.output)
    if not Path(cfg.features).is_file():
        raise ProbingError(f"--features {cfg.features} is not a file; give a feature file (.h5)")
    with FeatureFile(cfg.features) as ff:
        layers = resolve_layers(cfg.layers, ff.num_layers, "--layers", str(ff.path))
        positions = _positions(ff, cfg.positions)
        held_out = located.located_rows(ff, cfg.locate) if cfg.locate else {}
        sets = located.leave_out(
            label_sets(ff, cfg.classes, cfg.class_map, cfg.label_sets), held_out
        )
        splits = [split_label_set(s, cfg.test_fraction, cfg.seed) for s in sets]
        need = ff.num_rows * len(layers) * ff.hidden_size * 4 / 1e9
        if need > cfg.memory_limit_gb:
            raise ProbingError(
                f"one position of the file needs {need:.1f} GB in memory (limit "
                f"{cfg.memory_limit_gb} GB): choose fewer --layers or raise --memory_limit_gb"
            )
        locator = (
            located.Locator(
                held_out, sets, splits, len(positions), len(layers), cfg.bootstrap, cfg.seed
            )
            if held_out
            else None
        )
        result = compute(ff, sets, splits, layers, positions, locator.visit if locator else None)
        found = locator.located() if locator else None
        model = ff.meta.get("model", "")
    out.mkdir(parents=True, exist_ok=True)
    title = (
        f"{model}: {Path(cfg.features).name}, test fraction {cfg.test_fraction}, seed {cfg.seed}"
    )
    paths = {
        "csv": report.write_table(result, out),
        "npz": report.write_arrays(result, out),
        "png": report.plot(result, out, title),
    }
    if found is not None:
        paths["located_csv"] = located.write_csv(found, result, out)
        paths["located_png"] = located.plot(found, result, out / located.LOCATED_PLOT, title)
    for sentence in report.sentences(result) + (located.sentences(found, result) if found else []):
        log.info("%s", sentence)
    if cfg.wandb_project:
        _log_wandb(cfg, result, paths["png"])
    log.info("wrote %s, %s, %s", paths["csv"], paths["npz"], paths["png"])
    return {"result": result, "located": found, "rows": report.rows(result), **paths}


def _log_wandb(cfg: DirectionsConfig, result: Directions, png: Path) -> None:
    from probing.probes.wandb_utils import log_standalone

    tables = {"directions": (report.columns(result), report.rows(result))}
    log_standalone(cfg.wandb_project, cfg.output, "directions", asdict(cfg), tables,
                   {"directions_heatmap": png})  # fmt: skip
