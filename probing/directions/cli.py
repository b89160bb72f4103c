"""``probing directions FILE --output DIR``: difference-in-means directions per layer, stored position
and label set, their held-out AUROC and the cosines between label sets (docs/directions.md).

Writes ``DIR/directions.csv``, ``DIR/directions.npz`` and ``DIR/directions.png``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from probing.config import parse_config
from probing.directions import locate as located
from probing.directions import report
from probing.directions.compute import Directions, compute, split_label_set
from probing.directions.labels import label_sets
from probing.errors import ProbingError
from probing.features.positions import position_names, resolve_position
from probing.features.store import FeatureFile
from probing.layers import LayerSpec, resolve_layers

log = logging.getLogger(__name__)
DESCRIPTION = (
    "Difference-in-means directions of every label set (harmfulness, and any label_<name> dataset such "
    "as refusal verdicts) per layer and stored position: held-out AUROC of the projection and the "
    "cosine between label sets."
)


@dataclass
class DirectionsConfig:
    """Difference-in-means directions per layer, position and label set.

    Args:
        features: feature file (``.h5``); may be given without ``--features``.
        output: folder for ``directions.csv``, ``directions.npz`` and ``directions.png``.
        classes: ``[negative, positive]`` class names of the ``label`` dataset after ``class_map``;
            rows of other classes are left out of that label set.
        class_map: renames/merges classes first, e.g. ``{contrast: normal, jailbreak: malicious}``.
        label_sets: label sets to use: ``label`` (harmfulness, through ``classes``) and any per-row
            dataset ``label_<name>`` of the file (1 positive, 0 negative, -1 left out); default all.
        layers: layers: ``all``, an index, a list or ``"start:stop[:step]"``.
        positions: stored positions, by name (``inst``, ``post_1``, …, ``last``, ``mean``) or index;
            default every stored position.
        test_fraction: share of each label set's rows (stratified by class) held out to score the
            direction; the direction is the difference in means of the rest.
        seed: seed of the train/test split.
        memory_limit_gb: refuse to load more than this per position (rows × layers × hidden × 4 bytes).
        wandb_project: also log the table and heatmap to this W&B project (offline without a key).
        locate: classes of the file (e.g. ``[jailbreak]``) left out of every label set and placed
            on each direction: ``located.csv`` and ``located.png`` (0 = like the negatives, 1 = like
            the positives).
    """

    features: str
    output: str = "runs/directions"
    classes: list[str] = field(default_factory=lambda: ["normal", "malicious"])
    class_map: dict[str, str] = field(default_factory=dict)
    label_sets: list[str] | None = None
    layers: LayerSpec = "all"
    positions: list[int | str] | None = None
    test_fraction: float = 0.3
    seed: int = 0
    memory_limit_gb: float = 8.0
    wandb_project: str | None = None
    locate: list[str] = field(default_factory=list)


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
        result = compute(ff, sets, splits, layers, positions)
        found = located.locate(ff, result, sets, splits, held_out, positions) if held_out else None
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


def parse(argv: list[str]) -> DirectionsConfig:
    return parse_config(
        DirectionsConfig, argv, "probing directions", DESCRIPTION, positional=("features",)
    )


def run(argv: list[str]) -> int:
    directions(parse(argv))
    return 0
