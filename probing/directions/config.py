"""What `probing directions` does: its options, parsed without numpy's consumers (``--help`` stays
fast)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from probing.config import parse_config
from probing.layers import LayerSpec

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
        bootstrap: resamples behind each placement's 95 % interval (``placement_lo``/``_hi``; the
            located rows and the held-out rows of each class resampled); 0 = none.
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
    bootstrap: int = 1000


def parse(argv: Sequence[str]) -> DirectionsConfig:
    return parse_config(
        DirectionsConfig, argv, "probing directions", DESCRIPTION, positional=("features",)
    )
