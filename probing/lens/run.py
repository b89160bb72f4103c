"""The logit-lens run (``probing lens``): a feature file's top tokens per layer, their emotions and
consistency, written as tables, plots and a summary."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from probing.layers import resolve_layers
from probing.lens.analysis import analyse, file_tokenizer, select_classes
from probing.lens.config import LensConfig
from probing.lens.emotions import load_emotions
from probing.lens.plots import plot_all
from probing.lens.report import SUMMARY_NAME, summary_layers, summary_markdown, write_csvs
from probing.outputs import check_output_folder

log = logging.getLogger(__name__)


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
    # model-free checks first: a tokenizer from a GGUF file takes seconds to load
    ff.lens_position(cfg.position)
    select_classes(ff.labels, ff.label_names, cfg.classes, str(ff.path))
    check_output_folder(cfg.output)
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
