"""`probing lens FEATURES --output DIR`: logit-lens tokens, emotions and consistency of a feature file."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probing.config import parse_config
from probing.features.identity import ModelOverride
from probing.layers import LayerSpec, resolve_layers
from probing.lens.analysis import analyse, file_tokenizer
from probing.lens.emotions import load_emotions
from probing.lens.plots import plot_all
from probing.lens.report import SUMMARY_NAME, summary_layers, summary_markdown, write_csvs

log = logging.getLogger(__name__)
DESCRIPTION = (
    "Logit-lens analysis of a feature file's stored top-K: the most frequent tokens per layer and "
    "class, their emotion, and the Top-K Intermediate Consistency (docs/lens.md). Writes "
    "lens_consistency.csv, lens_top_tokens.csv, consistency.png, emotion_mass.png, "
    "lens_heatmap_<class>.png and lens_summary.md into --output."
)


@dataclass
class LensConfig:
    """Logit-lens analysis of a feature file.

    Args:
        features: feature file (``.h5``) with lens data; may be given without ``--features``.
        output: folder for the results.
        emotions: emotion token lists (default ``configs/emotion/default.yaml``).
        top: most frequent tokens kept per layer and class.
        classes: classes to analyse (default all).
        layers: layers shown in the heatmaps (default all) and the summary's token tables (default 5
            evenly spaced): ``all``, an index, a list or ``"start:stop[:step]"``; CSVs always hold
            every layer.
        position: stored position to read: an index (-1 = the last stored) or a name the file
            records (``inst``, ``post_1``, … of ``--positions template``; docs/positions.md).
        model: the model whose tokenizer decodes the ids: ``--model.name`` a name or folder (default:
            the file's model), ``--model.trust_remote_code``; the old ``--tokenizer NAME`` still
            works, with a warning. No model is loaded, only its tokenizer.
    """

    features: str
    output: str
    emotions: str | None = None
    top: int = 10
    classes: list[str] | None = None
    layers: LayerSpec | None = None
    position: int | str = -1
    model: ModelOverride = field(default_factory=ModelOverride)


def lens(cfg: LensConfig, tokenizer: Any = None) -> list[Path]:
    """Write the lens tables, plots and summary; returns their paths. ``tokenizer`` (tests,
    notebooks) overrides the one named by the file or ``cfg.model``."""
    from probing.features.store import FeatureFile

    emotions = load_emotions(cfg.emotions)
    ff = FeatureFile(cfg.features)
    layers = (
        resolve_layers(cfg.layers, ff.num_layers, "--layers", str(ff.path))
        if cfg.layers is not None
        else None
    )
    if tokenizer is None:
        tokenizer = file_tokenizer(ff.meta, cfg.model)
    result = analyse(ff, tokenizer, emotions, cfg.top, cfg.classes, cfg.position)
    out = Path(cfg.output)
    paths = write_csvs(result, out)
    paths += plot_all(result, out, layers)
    summary = out / SUMMARY_NAME
    summary.write_text(
        summary_markdown(result, layers or summary_layers(result.num_layers)), encoding="utf-8"
    )
    paths.append(summary)
    for c in result.classes.values():
        hit = c.metrics["emotion_hit_rate"]
        log.info(
            "%s (n=%d): dominant emotion %s, peak hit rate %.2f at layer %d",
            c.name,
            c.n,
            c.dominant_emotion,
            hit.max(),
            int(hit.argmax()),
        )
    log.info("wrote %s", ", ".join(p.name for p in paths))
    log.info("results in %s", out)
    return paths


ALIASES = {"--tokenizer": "--model.name"}


def parse(argv: list[str]) -> LensConfig:
    return parse_config(
        LensConfig, argv, "probing lens", DESCRIPTION, positional=("features",), aliases=ALIASES
    )


def run(argv: list[str], tokenizer: Any = None) -> int:
    """CLI entry; ``tokenizer`` (tests, notebooks) overrides the one named by the file or --model.name."""
    lens(parse(argv), tokenizer)
    return 0
