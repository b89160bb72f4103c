"""What `probing weak` does: its options, parsed without scikit-learn, torch or Lightning (``--help``
stays fast); the work is :func:`probing.probes.weak.run_weak`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from probing.config import parse_config
from probing.data.options import DataOptions

Classifier = Literal["svm", "mlp", "text"]
SPLIT = (0.7, 0.0, 0.3)  # the paper's 70/30 split, seed 42
DATA_DEFAULTS = {"data.split": list(SPLIT), "data.seed": 42, "data.layers": "all"}
DESCRIPTION = (
    "The paper's weak classifiers, per layer: a linear SVM and an MLP(100) from scikit-learn."
)


@dataclass
class WeakConfig:
    """The paper's weak classifiers on every selected layer.

    Args:
        data: the feature file and its split, as for the probes (``--data.path``, ``--data.classes``,
            ...; default split 0.7/0/0.3 with seed 42, all layers).
        classifiers: weak classifiers to train: ``svm`` and ``mlp`` on every layer, ``text`` (the text
            baseline on the prompt's words, no layer).
        seeds: repeat split and training over this many seeds (``data.seed``, +1, ...).
        bootstrap: bootstrap resamples of the test rows for an accuracy interval.
        mlp_max_iter: ``MLPClassifier`` max_iter (scikit-learn default).
        svm_c: ``SVC`` regularisation C.
        output_dir: where to write (default ``runs/weak/<feature file stem>``).
        compare_with: other ``per_layer_metrics.csv`` files to draw in the plot.
    """

    data: DataOptions
    classifiers: list[Classifier] = field(default_factory=lambda: ["svm", "mlp", "text"])
    seeds: int = 1
    bootstrap: int = 0
    mlp_max_iter: int = 200
    svm_c: float = 1.0
    output_dir: str | None = None
    compare_with: list[str] = field(default_factory=list)


def parse(argv: Sequence[str]) -> WeakConfig:
    return parse_config(WeakConfig, argv, "probing weak", DESCRIPTION, defaults=DATA_DEFAULTS)
