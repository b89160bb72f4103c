"""What `probing monitor` does: its options, parsed without torch (``--help`` stays fast)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from jsonargparse import ArgumentParser

from probing.config import build_parser as build_config_parser
from probing.config import parse_config
from probing.layers import AUTO, AUTO_TOLERANCE, LayerSpec
from probing.models.config import ModelOverride
from probing.prompts.sources import PromptSource

EVAL_FPRS = (0.01, 0.05)  # false positive rates of `--eval` (its report's columns)
DEFAULT_REFUSAL = "I can't help with that request."
DESCRIPTION = (
    "Screen prompts with a trained probe at an early layer (the forward stops there); calibrate its "
    "threshold for a target false positive rate; evaluate it per layer."
)


@dataclass
class MonitorConfig:
    """Screen prompts with a trained probe at one early layer, before the model generates.

    Args:
        ckpt: probe checkpoint of ``probing fit`` (its feature file's model is loaded), or a list
            of them (e.g. one per stored position, all trained with the same held-out sources):
            with ``--layer auto`` the one whose held-out TPR at ``fpr`` is best is used.
        probe: probe inside the checkpoint (``linear``, ``mlp``; default: the first).
        layer: layer to screen at: an index (-1 = the last), or ``auto`` (the earliest layer within
            ``auto_tolerance`` of the best validation accuracy recorded in training; for a probe
            trained with ``--data.holdout_sources``: the earliest layer within ``auto_tolerance`` of the
            best TPR at ``fpr`` on those held-out sources — cross-source validation).
        auto_tolerance: tolerance of ``--layer auto`` (0.005 = half a point; 0 = the best).
        prompt: one prompt to screen.
        prompts: prompts to screen: a file (CSV/TSV/JSON/JSONL/TXT/Parquet), a built-in set, or a list
            of prompt sources ``[{path, label, ...}]``; with ``--eval`` a labelled set (sources, or a
            feature file ``.h5`` of the same model: its stored activations, the fast path).
        json: write one JSON object per prompt (with ``--eval``: the report as JSON).
        output: write results to this file instead of stdout.
        threshold: flag prompts whose score is at least this probability (overrides ``--fpr``).
        fpr: target false positive rate of the threshold chosen on the calibration set.
        calibrate: labelled calibration set (a feature file ``.h5`` or prompt sources; default: the
            held-out sources of the probe's training run, or its validation split when it held out
            none). Thresholds are stored in ``monitor.json`` beside the checkpoint and reused.
        positive: harmful class of a binary probe (score = p(positive)).
        negative: normal class (score of probes with 3+ classes = 1 - p(negative)).
        eval: report AUROC, TPR at ``eval_fprs`` and per-class results for every layer (default set:
            the training file's test split plus the classes it was not trained on).
        eval_fprs: false positive rates of the evaluation.
        text_baseline: with ``--eval``, also evaluate the text baseline (the prompt's word and character
            n-grams, fitted on the probe's training rows, calibrated on the same set by the same FPR
            rule) and say per layer whether the states beat it (``text_baseline``, ``above_words``).
        bootstrap: paired bootstrap resamples behind ``above_words`` (0: none).
        generate: screen, then generate for allowed prompts and answer ``refusal`` to flagged ones.
        max_new_tokens: greedy tokens generated per allowed prompt.
        refusal: answer given to flagged prompts.
        model: how the probe's model (its training features' model, checked) is loaded:
            ``--model.name`` (the same weights from elsewhere), ``--model.device`` (default ``cpu``),
            ``--model.dtype`` (default: the extraction's), ``--model.trust_remote_code`` (never
            taken from the feature file); the old ``--model_name``, ``--device``, ``--dtype``,
            ``--trust_remote_code`` still work, with a warning.
        batch_size: prompts per forward pass.
        progress: show progress bars (prompts screened or generated, with their rate).
    """

    ckpt: str | list[str]
    probe: str | None = None
    layer: LayerSpec = AUTO
    auto_tolerance: float = AUTO_TOLERANCE
    prompt: str | None = None
    prompts: str | list[PromptSource] | None = None
    json: bool = False
    output: str | None = None
    threshold: float | None = None
    fpr: float = 0.01
    calibrate: str | list[PromptSource] | None = None
    positive: str = "malicious"
    negative: str = "normal"
    eval: bool = False
    eval_fprs: list[float] = field(default_factory=lambda: list(EVAL_FPRS))
    text_baseline: bool = True
    bootstrap: int = 1000
    generate: bool = False
    max_new_tokens: int = 32
    refusal: str = DEFAULT_REFUSAL
    model: ModelOverride = field(default_factory=lambda: ModelOverride(device="cpu"))
    batch_size: int = 8
    progress: bool = True


ALIASES = {  # deprecated option -> current option
    "--model_name": "--model.name",
    "--device": "--model.device",
    "--dtype": "--model.dtype",
    "--trust_remote_code": "--model.trust_remote_code",
}


def build_parser() -> ArgumentParser:
    return build_config_parser(MonitorConfig, "probing monitor", DESCRIPTION, sub_configs=False)


def parse(argv: Sequence[str]) -> MonitorConfig:
    return parse_config(
        MonitorConfig, argv, "probing monitor", DESCRIPTION, aliases=ALIASES, sub_configs=False
    )
