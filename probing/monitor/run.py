"""The monitor run (``probing monitor``): the model-free checks, the probe and its layer (one
checkpoint, or the best of several by the held-out rule), then screening, guarded generation or the
per-layer evaluation."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from probing.errors import ProbingError
from probing.features.identity import recorded_model
from probing.layers import is_auto
from probing.models.load import LoadedModel, load_model
from probing.monitor.calibrate import (
    Scorer,
    check_fpr,
    check_threshold,
    evaluate,
    rates,
)
from probing.monitor.config import MonitorConfig
from probing.monitor.labelled import (
    calibrate_probe,
    choose_layer_cross_source,
    default_split,
    is_feature_file,
    labelled_probs,
)
from probing.monitor.probe import LoadedProbe, choose_layer, load_probe
from probing.monitor.screen import Guarded, Screener, Screening, guarded_generate
from probing.monitor.words import labelled_prompts, text_report
from probing.outputs import check_output_file
from probing.prompts.sources import PromptSource, load_prompts

log = logging.getLogger(__name__)
__all__ = ["monitor"]


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
        check_output_file(cfg.output)


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
    chosen = choose_checkpoint(cfg) if isinstance(cfg.ckpt, list) else None
    if chosen is not None:  # the probe and its layer, by the held-out rule
        probe, layer = chosen
        cfg = dataclasses.replace(cfg, ckpt=str(probe.path))  # the one chosen, from here on
    else:
        probe = load_probe(cfg.ckpt, cfg.probe)
    scorer = Scorer(tuple(probe.class_names), cfg.positive, cfg.negative)
    if chosen is None and is_auto(cfg.layer) and default_split(probe) == "heldout":
        layer, _ = choose_layer_cross_source(probe, scorer, cfg.fpr, cfg.auto_tolerance)
    elif chosen is None:
        layer = choose_layer(probe, cfg.layer, cfg.auto_tolerance)
    screener = None
    if _needs_model(cfg):
        lm = _load_lm(cfg, probe, lm)
        screener = Screener(
            lm, probe, layer, cfg.threshold, scorer, cfg.batch_size, progress=cfg.progress
        )
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


def choose_checkpoint(cfg: MonitorConfig) -> tuple[LoadedProbe, int]:
    """``--ckpt [A, B, …]`` (e.g. one probe per stored position, trained with the same held-out
    sources): the probe whose TPR at ``--fpr`` on those held-out sources, at the layer ``--layer
    auto`` chooses for it, is best (the first listed on a tie) — the layer's rule, applied across
    checkpoints. Returns the probe and its layer."""
    if not cfg.ckpt:
        raise ProbingError("--ckpt is an empty list; give one checkpoint or several")
    if not is_auto(cfg.layer):
        raise ProbingError(
            "several --ckpt are chosen between by --layer auto's cross-source rule; give --layer "
            "auto or one --ckpt"
        )
    best: tuple[float, LoadedProbe, int] | None = None
    for path in cfg.ckpt:
        probe = load_probe(path, cfg.probe)
        if default_split(probe) != "heldout":
            raise ProbingError(
                f"--ckpt {path} was trained without held-out sources (--data.holdout_sources): "
                "several checkpoints are compared on the sources they never saw"
            )
        scorer = Scorer(tuple(probe.class_names), cfg.positive, cfg.negative)
        layer, tpr = choose_layer_cross_source(probe, scorer, cfg.fpr, cfg.auto_tolerance)
        where = probe.data_hparams.get("position", -1)
        log.info("--ckpt %s (position %s): layer %d, held-out TPR %.3f", path, where, layer, tpr)
        if best is None or tpr > best[0]:
            best = (tpr, probe, layer)
    assert best is not None
    log.info("--ckpt: chose %s (held-out TPR %.3f at FPR %g)", best[1].path, best[0], cfg.fpr)
    return best[1], best[2]


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
