"""A grafting sweep over layers from its config: donors, probe, sweep, CSV + plot (``probing graft``)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probing.errors import ProbingError
from probing.features.identity import recorded_model, require_same_model
from probing.features.store import FeatureFile
from probing.generation.judge import load_judge
from probing.grafting.config import GraftConfig
from probing.grafting.donors import (
    class_mean,
    class_rows,
    graft_position,
    paired_rows,
    row_states,
    sample,
    target_sequences,
)
from probing.grafting.summary import add_intervals
from probing.grafting.sweep import GraftSweep, SweepResult
from probing.layers import resolve_layers
from probing.models.load import LoadedModel, load_model
from probing.plotting import save_figure, subplots
from probing.tables import write_csv

log = logging.getLogger(__name__)


def donors(
    cfg: GraftConfig, ff: FeatureFile, position: int = -1, targets: np.ndarray | None = None
) -> torch.Tensor:
    """The donor states: ``[L, D]``, ``[D]``, or ``[len(targets), L, D]`` for ``paired`` (one per
    target row; ``targets`` None: as many as the source class has rows)."""
    if cfg.source == "class_mean":
        return class_mean(ff, cfg.source_class, position)
    if cfg.source == "paired":
        pool = class_rows(ff, cfg.source_class)
        wanted = np.full(len(pool), -1) if targets is None else targets  # -1: no target row
        rows = paired_rows(pool, wanted, cfg.seed)
        return row_states(ff, rows, position)
    if cfg.source == "row":
        if not 0 <= cfg.source_row < ff.num_rows:
            raise ProbingError(
                f"--source_row {cfg.source_row} is out of range: {ff.path} has rows 0..{ff.num_rows - 1}"
            )
        return torch.from_numpy(ff.layers(position=position, rows=cfg.source_row)).reshape(
            ff.num_layers, -1
        )
    if not cfg.vector:
        raise ProbingError("--source vector needs --vector FILE.npy")
    try:
        vec = torch.from_numpy(np.load(cfg.vector)).float()
    except (OSError, ValueError) as err:
        raise ProbingError(f"cannot read --vector {cfg.vector}: {err}") from None
    if vec.ndim == 2 and vec.shape[0] != ff.num_layers:
        raise ProbingError(
            f"--vector has {vec.shape[0]} layers, expected {ff.num_layers} (or one [D] vector)"
        )
    if vec.shape[-1] != ff.hidden_size or vec.ndim not in (1, 2):
        raise ProbingError(
            f"--vector has shape {tuple(vec.shape)}, expected [{ff.hidden_size}] or [{ff.num_layers}, {ff.hidden_size}]"
        )
    return vec


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ProbingError(
            f"cannot write into --output {out}: {err.strerror or err}; choose a writable folder"
        ) from None


def graft_probe(path: str | None, ff: FeatureFile) -> Any:
    """The probe of ``--probe_ckpt`` (checked against the feature file), or None."""
    if not path:
        return None
    from probing.probes.checkpoint import load_probe_checkpoint

    return load_probe_checkpoint(path, ff.meta)


def emotion_classifier(path: str | None):
    from probing.lens.emotions import load_emotions

    return load_emotions(path).classify


def sweep(cfg: GraftConfig, lm: LoadedModel | None = None, probe: Any = None) -> SweepResult:
    """Run the sweep and write its files into ``cfg.output``."""
    # everything that needs no model is checked before loading it
    for option in ("limit", "max_new_tokens", "batch_size", "rows_per_pass", "layer_stride"):
        if getattr(cfg, option) < 1:
            raise ProbingError(f"--{option} must be >= 1, got {getattr(cfg, option)}")
    ff = FeatureFile(cfg.features)
    stride = f"1::{max(1, cfg.layer_stride)}"  # the default: every layer_stride-th layer from 1
    spec = stride if cfg.layers is None else cfg.layers
    layers = resolve_layers(spec, ff.num_layers, "--layers", str(ff.path))
    position, tail = graft_position(ff, cfg.position)
    targets = sample(class_rows(ff, cfg.target_class, "--target_class"), cfg.limit, cfg.seed)
    probe = probe if probe is not None else graft_probe(cfg.probe_ckpt, ff)
    donor = donors(cfg, ff, position, targets)
    judge, emotion = load_judge(cfg.judge), emotion_classifier(cfg.emotions)
    _check_writable(Path(cfg.output))
    if lm is None:
        lm = load_model(recorded_model(ff.meta, cfg.model))
    require_same_model(ff.meta, lm, str(ff.path))
    seqs, prompts = target_sequences(ff, targets, lm.tokenizer, tail)
    jb: list[list[int]] = []
    if cfg.jailbreak_class and cfg.jailbreak_class in ff.label_names:
        jb_rows = sample(class_rows(ff, cfg.jailbreak_class), cfg.limit, cfg.seed)
        jb, _ = target_sequences(ff, jb_rows, lm.tokenizer, tail)
    positive = 1
    if probe is not None and cfg.positive_class in getattr(probe, "class_names", []):
        positive = probe.class_names.index(cfg.positive_class)
    runner = GraftSweep(
        lm,
        judge,
        emotion,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        rows_per_pass=cfg.rows_per_pass,
        probe=probe,
        positive_class=positive,
        progress=cfg.progress,
    )
    result = runner.run(seqs, prompts, layers, donor, jb, tail)
    add_intervals(result)
    write(cfg, result, lm)
    return result


def write(cfg: GraftConfig, result: SweepResult, lm: LoadedModel) -> Path:
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("graft_results.csv", result.rows), ("graft_summary.csv", result.summary)):
        write_csv(out / name, rows, list(rows[0]), digits=None)
    config = dataclasses.asdict(cfg)
    (out / "graft_config.json").write_text(
        json.dumps({"config": config, "model": lm.meta}, indent=2, default=str)
    )
    plot(
        result.summary,
        out / "graft_sweep.png",
        title=f"grafting {cfg.source} of {cfg.source_class} into {cfg.target_class} — {lm.meta.get('model')}",
    )
    log.info("wrote %s", out)
    return out


def plot(summary: list[dict[str, Any]], path: Path, title: str = "") -> None:
    grafted = [s for s in summary if s["condition"] == "grafted"]
    refs = {s["condition"]: s for s in summary if s["condition"] != "grafted"}
    layers = [s["layer"] for s in grafted]
    metrics = [
        ("refusal_rate", "refusal rate"),
        ("affirmative_first_rate", "affirmative first token"),
        ("mean_kl", "mean KL vs ungrafted"),
    ]
    if grafted and grafted[0]["probe_flip_rate"] != "":
        metrics.append(("probe_flip_rate", "probe flip rate (later layers)"))
    fig, axes = subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
    for ax, (key, label) in zip(np.atleast_1d(axes), metrics):
        values = [s[key] for s in grafted]
        ax.plot(layers, values, marker="o", ms=3, label="grafted")
        if key == "refusal_rate" and grafted and "refusal_low" in grafted[0]:
            ax.fill_between(
                layers,
                [s["refusal_low"] for s in grafted],
                [s["refusal_high"] for s in grafted],
                alpha=0.2,
                label="95 % interval",
            )
        for name, style in (("ungrafted", "--"), ("jailbreak", ":")):
            if name in refs and refs[name][key] != "" and key != "mean_kl":
                color = "grey" if name == "ungrafted" else "red"
                ax.axhline(refs[name][key], ls=style, color=color, label=name)
                if key == "refusal_rate" and "refusal_low" in refs[name]:
                    low, high = refs[name]["refusal_low"], refs[name]["refusal_high"]
                    ax.axhspan(low, high, color=color, alpha=0.08)
        ax.set_xlabel("grafted layer (0 = embeddings)")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
