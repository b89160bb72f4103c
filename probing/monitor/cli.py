"""`probing monitor --ckpt CKPT [--layer auto|N] (--prompt TEXT | --prompts FILE | --eval)`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from probing.config import build_parser as build_config_parser
from probing.config import parse_config
from probing.errors import ProbingError
from probing.features.identity import ModelOverride, recorded_model
from probing.layers import AUTO, AUTO_TOLERANCE, LayerSpec, is_auto
from probing.models.load import LoadedModel, load_model
from probing.monitor.calibrate import (
    EVAL_FPRS,
    Scorer,
    check_fpr,
    check_threshold,
    evaluate,
    rates,
)
from probing.monitor.labelled import (
    calibrate_probe,
    choose_layer_cross_source,
    default_split,
    is_feature_file,
    labelled_probs,
)
from probing.monitor.output import write_results
from probing.monitor.probe import LoadedProbe, choose_layer, load_probe
from probing.monitor.screen import DEFAULT_REFUSAL, Guarded, Screener, Screening, guarded_generate
from probing.monitor.words import labelled_prompts, text_report
from probing.prompts.sources import PromptSource, load_prompts

log = logging.getLogger(__name__)


@dataclass
class MonitorConfig:
    """Screen prompts with a trained probe at one early layer, before the model generates.

    Args:
        ckpt: probe checkpoint of ``probing fit`` (its feature file's model is loaded).
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
    """

    ckpt: str
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


ALIASES = {
    "--model_name": "--model.name",
    "--device": "--model.device",
    "--dtype": "--model.dtype",
    "--trust_remote_code": "--model.trust_remote_code",
}


def _validate(cfg: MonitorConfig) -> None:
    if cfg.threshold is not None:
        check_threshold(cfg.threshold)
    check_fpr(cfg.fpr)
    for f in cfg.eval_fprs:
        check_fpr(f, "--eval_fprs")
    if cfg.max_new_tokens < 1:
        raise ProbingError(f"--max_new_tokens must be >= 1, got {cfg.max_new_tokens}")
    if cfg.eval and (cfg.prompt is not None or cfg.generate):
        raise ProbingError("--eval takes a labelled set in --prompts, not --prompt or --generate")
    if not cfg.eval and cfg.prompt is None and cfg.prompts is None:
        raise ProbingError("nothing to screen: give --prompt TEXT, --prompts FILE or --eval")
    if cfg.prompt is not None and cfg.prompts is not None:
        raise ProbingError("give either --prompt or --prompts, not both")
    if not cfg.eval and isinstance(cfg.prompts, str) and is_feature_file(cfg.prompts):
        raise ProbingError(
            "--prompts is a feature file; screening needs prompts (a feature file only works with --eval)"
        )
    if cfg.output is not None:
        _check_output(Path(cfg.output))


def _check_output(out: Path) -> None:
    """``--output`` can be written (checked before the probe and model load; its folder is made
    when the results are written)."""
    if out.is_dir():
        raise ProbingError(
            f"--output {out} is a folder; give a file name, e.g. {out / 'out.jsonl'}"
        )
    folder = next(p for p in out.absolute().parents if p.exists())
    if not folder.is_dir():
        raise ProbingError(
            f"--output {out}: {folder} is a file, not a folder; choose another --output"
        )
    if not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ProbingError(
            f"cannot write --output {out} (permission denied); choose another --output"
        )


def _needs_model(cfg: MonitorConfig) -> bool:
    def fast(source: Any) -> bool:
        return source is None or (isinstance(source, str) and is_feature_file(source))

    if not cfg.eval:
        return True
    return not fast(cfg.prompts) or (cfg.threshold is None and not fast(cfg.calibrate))


def _load_lm(cfg: MonitorConfig, probe: LoadedProbe, lm: LoadedModel | None) -> LoadedModel:
    """The probe's model (checked against the probe once, by the :class:`Screener`)."""
    return lm or load_model(recorded_model(probe.feature_meta, cfg.model))


def monitor(
    cfg: MonitorConfig, lm: LoadedModel | None = None
) -> list[Screening] | list[Guarded] | dict[str, Any]:
    """Run the monitor as configured; returns screenings, guarded answers or the evaluation report.
    ``lm`` skips loading the model (tests, notebooks); it is still checked against the probe."""
    _validate(cfg)
    prompts = _read_sources(cfg)  # model-free checks first: the model load takes seconds to minutes
    probe = load_probe(cfg.ckpt, cfg.probe)
    scorer = Scorer(tuple(probe.class_names), cfg.positive, cfg.negative)
    if is_auto(cfg.layer) and default_split(probe) == "heldout":
        layer = choose_layer_cross_source(probe, scorer, cfg.fpr, cfg.auto_tolerance)
    else:
        layer = choose_layer(probe, cfg.layer, cfg.auto_tolerance)
    screener = None
    if _needs_model(cfg):
        lm = _load_lm(cfg, probe, lm)
        screener = Screener(lm, probe, layer, cfg.threshold, scorer, cfg.batch_size)
    if cfg.eval:
        return _evaluate(cfg, probe, scorer, layer, screener)
    assert screener is not None
    if cfg.threshold is None:
        cal = calibrate_probe(probe, scorer, cfg.fpr, cfg.calibrate, screener)
        screener.threshold = cal.threshold(layer)
        log.info(
            "threshold %.4f at layer %d (FPR %g on the calibration set; TPR there %.3f)",
            screener.threshold,
            layer,
            cfg.fpr,
            cal.tpr[cal.layers.index(layer)],
        )
    assert prompts is not None
    if cfg.generate:
        return guarded_generate(screener, prompts, cfg.max_new_tokens, cfg.refusal)
    return screener.screen(prompts)


def _read_sources(cfg: MonitorConfig) -> list[str] | None:
    """Every prompt source the run reads exists and parses (``--calibrate``, and ``--prompts`` of
    ``--eval``; feature files are checked where they are read, without the model); returns the
    prompts to screen (None with ``--eval``)."""
    for source in (cfg.calibrate, cfg.prompts if cfg.eval else None):
        if source is not None and not (isinstance(source, str) and is_feature_file(source)):
            _load(source)
    if cfg.eval:
        return None
    return [cfg.prompt] if cfg.prompt is not None else _load(cfg.prompts)


def _load(source: str | list[PromptSource] | None) -> list[str]:
    sources = [PromptSource(path=source)] if isinstance(source, str) else list(source or [])
    prompts, _, _, _ = load_prompts(sources)
    return prompts


def _evaluate(
    cfg: MonitorConfig,
    probe: LoadedProbe,
    scorer: Scorer,
    layer: int,
    screener: Screener | None,
) -> dict[str, Any]:
    probs, labels, sources, what = labelled_probs(probe, cfg.prompts, "test", screener)
    if cfg.threshold is None:
        cals = [calibrate_probe(probe, scorer, f, cfg.calibrate, screener) for f in cfg.eval_fprs]
    else:
        cals = []
    scores = scorer(probs)
    per_layer = evaluate(
        scores, labels, scorer, probe.layers, cals, probe.class_map, cfg.eval_fprs, sources
    )
    if cfg.threshold is not None:
        positive = scorer.is_positive(labels, probe.class_map)
        for j, entry in enumerate(per_layer):
            entry["calibrated"]["threshold"] = {
                "threshold": cfg.threshold,
                **rates(scores[:, j], positive, cfg.threshold),
            }
    report = {
        "checkpoint": str(probe.path),
        "probe": probe.probe,
        "score": scorer.rule,
        "model": probe.feature_meta.get("model"),
        "eval_set": what,
        "calibration_set": cals[0].source if cals else None,
        "chosen_layer": layer,
        "chosen": next(e for e in per_layer if e["layer"] == layer),
        "layers": per_layer,
    }
    if cfg.text_baseline:
        prompts, _ = labelled_prompts(probe, cfg.prompts, "test")
        text_report(probe, scorer, report, (prompts, labels, sources), (scores, cals),
                    cfg.calibrate, cfg.eval_fprs, cfg.bootstrap)  # fmt: skip
    return report


# -- command line -------------------------------------------------------------------------------------
DESCRIPTION = (
    "Screen prompts with a trained probe at an early layer (the forward stops there); calibrate its "
    "threshold for a target false positive rate; evaluate it per layer."
)


def build_parser() -> ArgumentParser:
    return build_config_parser(MonitorConfig, "probing monitor", DESCRIPTION, sub_configs=False)


def parse(argv: list[str]) -> MonitorConfig:
    return parse_config(
        MonitorConfig, argv, "probing monitor", DESCRIPTION, aliases=ALIASES, sub_configs=False
    )


def run(argv: list[str]) -> int:
    cfg = parse(argv)
    write_results(monitor(cfg), cfg.output, cfg.json)
    return 0
