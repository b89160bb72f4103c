"""What `probing generalize` does: its options, parsed without torch (``--help`` stays fast)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from probing.config import parse_config
from probing.layers import LayerSpec

DESCRIPTION = (
    "Does a probe generalise to prompt sources it never saw? Leave-one-source-out and explicit "
    "train→test matrices, every layer, linear and MLP heads, beside a text baseline on the prompt's words."
)


@dataclass
class GeneralizeConfig:
    """Cross-source generalisation of all-layer probes.

    Args:
        features: feature files (``.h5``) of one model and extraction; their prompt sources are the units
            held out (names as ``probing info`` lists them; ``stem:name`` when two files share a name).
        output: folder for ``generalization.csv``, ``generalization.png`` and ``generalization.md``.
        classes: ``[negative, harmful]`` class names after ``class_map``; rows of other classes are dropped.
        class_map: renames/merges classes first, e.g. ``{contrast: normal, jailbreak: malicious}``.
        label: label set: ``label``, the prompts' classes (default), or one the files add, e.g.
            ``refused`` (``probing refusal --features``) with ``--classes [complied, refused]``.
        loso: leave-one-source-out: for every source, train on all the others and test on it.
        matrix: explicit folds ``[{train: [sources], test: [sources], name: optional}]``; a ``test``
            item may be ``{name: NAME, sources: [sources]}``, one test set pooled from several sources
            (e.g. one language's safe and harmful prompts, so AUROC ranks them against each other;
            a fold's cross-source mean in ``above_words.csv`` is then over its pooled sets).
        probes: head kinds: ``linear`` (L2 logistic regression, L-BFGS), ``mlp`` (one hidden layer) and
            ``text``: the text baseline, logistic regression on TF-IDF word 1–2-grams and character
            2–5-grams of the prompts (no layer; the control every layer is read against); ``poe``: a
            linear probe fitted as a product of experts with the text baseline (its out-of-fold
            log-probabilities added to the logits while fitting, dropped when scoring), so that it
            learns what the words do not explain.
        layers: layers to probe: ``all``, an index, a list or ``"start:stop[:step]"``.
        position: stored token position: an index (``-1`` = the last stored) or a name the files
            record (``inst``, ``post_1``, … of ``--positions template``; docs/positions.md).
        fpr: thresholds flag at most this share of the training sources' negatives (validation part).
        split: fit/val/test fractions of the training sources' rows (stratified by source and class).
        l2: L2 penalty on the mean loss (linear: on the weights; MLP: AdamW weight decay).
        seed: seed of the split and the MLP initialisation.
        repeats: run every fold this many times with seeds ``seed, seed + 1, …`` (new fit/val/test
            splits and MLP initialisations); the CSV keeps every repeat (``seed`` column), the heatmap
            and ``generalization.md`` show means and the spread between repeats. A catch rate at 1 %
            FPR rests on the few highest-scoring negatives, so one fit can move it by several points.
        bootstrap: paired bootstrap resamples for ``above_words.csv`` (every probe − text, per layer and
            test set, with a 95 % interval); 0 skips it.
        memory_limit_gb: refuse to load more than this (rows × layers × hidden × 4 bytes).
        wandb_project: also log the table and heatmap to this W&B project (offline without a key).
    """

    features: list[str]
    output: str = "runs/generalize"
    classes: list[str] = field(default_factory=lambda: ["normal", "malicious"])
    class_map: dict[str, str] = field(default_factory=dict)
    label: str = "label"
    loso: bool = True
    matrix: list[dict[str, Any]] = field(default_factory=list)
    probes: list[Literal["linear", "mlp", "text", "poe"]] = field(
        default_factory=lambda: ["linear", "mlp", "text"]
    )
    layers: LayerSpec = "all"
    position: int | str = -1
    fpr: float = 0.01
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    l2: float = 1e-2
    seed: int = 0
    repeats: int = 1
    bootstrap: int = 1000
    memory_limit_gb: float = 8.0
    wandb_project: str | None = None


def feature_list(argv: list[str]) -> list[str]:
    """``--features A B C`` (shell style) → ``--features '["A", "B", "C"]'``; a YAML list stays as is."""
    out, i = [], 0
    while i < len(argv):
        if (
            argv[i] == "--features"
            and i + 1 < len(argv)
            and not argv[i + 1].lstrip().startswith("[")
        ):
            j = i + 1
            while j < len(argv) and not argv[j].startswith("-"):
                j += 1
            out += ["--features", json.dumps(argv[i + 1 : j])]
            i = j
        else:
            out.append(argv[i])
            i += 1
    return out


def parse(argv: Sequence[str]) -> GeneralizeConfig:
    return parse_config(
        GeneralizeConfig, feature_list(list(argv)), "probing generalize", DESCRIPTION
    )
