"""What a comparison is: its runs (model × prompt format), config, validation and results."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from probing.config import parse_config
from probing.errors import ProbingError
from probing.features.layout import Positions
from probing.models.config import DtypeOption
from probing.outputs import check_output_folder
from probing.prompts.sources import PromptSource

Classifier = Literal["svm", "mlp"]
METRIC_COLUMNS = (
    "run", "model", "template", "classifier", "layer", "relative_depth", "split",
    "accuracy", "f1", "auroc",
)  # fmt: skip
SUMMARY_COLUMNS = (
    "run", "model", "template", "classifier", "status", "num_layers", "threshold",
    "first_layer", "first_relative_depth", "best_accuracy", "best_layer", "reason",
)  # fmt: skip
METRICS_CSV, SUMMARY_CSV, RUNS_JSON, REPORT_MD = (
    "compare_metrics.csv",
    "compare_summary.csv",
    "compare_runs.json",
    "compare.md",
)
GRID_PNG, GRID_RELATIVE_PNG = "compare_grid.png", "compare_grid_relative.png"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PROBE_VAL_FRACTION = 0.1
NO_CONTEXT_LIMIT = 10**9  # plans only to fingerprint: the context length changes no fingerprint


@dataclass
class RunSpec:
    """One line of the grid: a model under one prompt format.

    Args:
        model: a built-in name (``smollm2-135m-instruct``, ``gemma3-270m``), a hub id, a local model
            folder or a ``.gguf`` file.
        template: ``chat`` (the tokenizer's chat template with the generation prompt) or ``raw`` text.
        system_prompt: system message for ``chat``.
        name: the run's name in plots, CSVs and the feature file name (default ``<model>-<template>``).
        gguf_file: GGUF file inside the folder or hub repo given by ``model``.
        features: an existing feature file to use instead of extracting (it must hold the comparison's
            prompts).
    """

    model: str
    template: Literal["chat", "raw"] = "chat"
    system_prompt: str | None = None
    name: str | None = None
    gguf_file: str | None = None
    features: str | None = None

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        stem = Path(self.model).stem if "/" in self.model else self.model
        return f"{stem}-{self.template}"


@dataclass
class CompareConfig:
    """A comparison of models and prompt formats over one prompt set.

    Args:
        runs: the runs to compare (models × prompt formats).
        prompts: labelled prompt sources shared by every run (built-in sets ``normal``,
            ``malicious``, ``jailbreak`` or files).
        classifiers: the paper's weak classifiers to train on each layer (``svm``, ``mlp``).
        threshold: accuracy whose first crossing is reported per run (the paper: 0.95).
        test_fraction: stratified test share of the rows (the paper: 0.3).
        seed: seed of the split and the classifiers.
        features_dir: where each run's feature file ``<run>.h5`` goes (identical finished files are
            reused).
        output_dir: where the CSVs, plots and Markdown summary go.
        dtype: compute dtype of every model (``auto``: bfloat16 where the hardware computes it
            natively, else float32).
        device: ``cpu`` or ``cuda``.
        batch_size: prompts per forward pass.
        positions: token position(s) stored per prompt.
        lens_top_k: logit-lens tokens stored per layer.
        storage_dtype: dtype of the stored activations.
        mlp_max_iter: MLPClassifier max_iter.
        probes: probe configs (e.g. ``configs/probe/linear.yaml``) also trained on each run with the
            Lightning CLI (``probing fit``), split ``1 - test_fraction - 0.1 / 0.1 / test_fraction``
            (the same test rows as the weak classifiers); they join the classifiers in the CSVs and
            the grid as ``probe-<name>`` (``probe-linear``, ``probe-mlp``). Checkpoints and reports
            go to ``<output_dir>/probes/<run>/``.
        overwrite: re-extract a run whose feature file holds another model, prompt set or setting.
        progress: show progress bars.
    """

    runs: list[RunSpec] = field(default_factory=list)
    prompts: list[PromptSource] = field(default_factory=list)
    classifiers: list[Classifier] = field(default_factory=lambda: ["svm", "mlp"])
    threshold: float = 0.95
    test_fraction: float = 0.3
    seed: int = 42
    features_dir: str = "features/compare"
    output_dir: str = "runs/compare"
    dtype: DtypeOption = "float32"
    device: str = "cpu"
    batch_size: int = 16
    positions: Positions = "last"
    lens_top_k: int = 5
    storage_dtype: Literal["float16", "float32"] = "float16"
    mlp_max_iter: int = 200
    probes: list[str] = field(default_factory=list)
    overwrite: bool = False
    progress: bool = True


@dataclass
class RunResult:
    """What became of one run: ``ok`` with per-layer rows, or ``failed`` with a one-line reason."""

    name: str
    spec: RunSpec
    status: Literal["ok", "failed"] = "ok"
    reason: str = ""
    features: str = ""
    reused: bool = False
    num_layers: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)  # compare_metrics.csv rows
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class CompareResult:
    runs: list[RunResult]
    metrics: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    paths: dict[str, Path]

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.runs if r.status != "ok"]


def validate(cfg: CompareConfig) -> None:
    """Checks of the whole config, before any run (each names the option to change)."""
    if not cfg.runs:
        raise ProbingError("--runs is empty; list at least one {model, template} run")
    names = [r.run_name for r in cfg.runs]
    for name in names:
        if not _NAME.match(name):
            raise ProbingError(
                f"run name {name!r} is not usable as a file name; set `name` of that run "
                "(letters, digits, '.', '_', '-')"
            )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ProbingError(f"runs share the names {dupes}; give each run a distinct `name`")
    if not cfg.prompts and any(r.features is None for r in cfg.runs):
        raise ProbingError(
            "--prompts is empty; every run needs the same prompt sources (or a `features` file)"
        )
    if not cfg.classifiers:
        raise ProbingError("--classifiers is empty; choose svm, mlp or both")
    if not 0.0 < cfg.threshold <= 1.0:
        raise ProbingError(f"--threshold must be in (0, 1], got {cfg.threshold}")
    if not 0.0 < cfg.test_fraction < 1.0:
        raise ProbingError(f"--test_fraction must be in (0, 1), got {cfg.test_fraction}")
    if cfg.probes and cfg.test_fraction + PROBE_VAL_FRACTION >= 1.0:
        raise ProbingError(
            f"--test_fraction {cfg.test_fraction} leaves no training rows for --probes (they also "
            f"hold out {PROBE_VAL_FRACTION} for validation)"
        )
    for probe in cfg.probes:
        if not Path(probe).is_file():
            raise ProbingError(f"--probes: probe config {probe} does not exist")
    for spec in cfg.runs:
        if spec.features and not Path(spec.features).is_file():
            raise ProbingError(
                f"run {spec.run_name!r}: features file {spec.features} does not exist; fix its "
                "`features` (or leave it out to extract)"
            )
    check_output_folder(cfg.output_dir, "--output_dir")
    check_output_folder(cfg.features_dir, "--features_dir")


def parse(argv: Sequence[str]) -> CompareConfig:
    """``probing compare`` options → :class:`CompareConfig` (no torch: ``--help`` stays fast)."""
    return parse_config(
        CompareConfig,
        argv,
        "probing compare",
        "Compare models and prompt formats: weak-classifier accuracy per layer for each run, drawn as "
        "the paper's grid.",
    )
