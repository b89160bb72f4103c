"""`probing lens FEATURES --output DIR`: logit-lens tokens, emotions and consistency of a feature file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from probing.lens.analysis import (
    analyse,
    check_layers,
    file_tokenizer,
    summary_layers,
    summary_markdown,
    write_csvs,
)
from probing.lens.emotions import load_emotions
from probing.lens.plots import plot_all

log = logging.getLogger(__name__)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="probing lens",
        description="Logit-lens analysis of a feature file's stored top-K: the most frequent tokens "
        "per layer and class, their emotion, and the Top-K Intermediate Consistency (docs/lens.md). "
        "Writes lens_consistency.csv, lens_top_tokens.csv, consistency.png, emotion_mass.png, "
        "lens_heatmap_<class>.png and lens_summary.md into --output.",
        default_env=False,
    )
    parser.add_argument("features", type=str, help="feature file (.h5) with lens data")
    parser.add_argument("--output", type=str, required=True, help="folder for the results")
    parser.add_argument(
        "--emotions",
        type=str | None,
        default=None,
        help="emotion token lists (default configs/emotion/default.yaml)",
    )
    parser.add_argument(
        "--top", type=int, default=10, help="most frequent tokens kept per layer and class"
    )
    parser.add_argument(
        "--classes", type=list[str] | None, default=None, help="classes to analyse (default all)"
    )
    parser.add_argument(
        "--layers",
        type=list[int] | None,
        default=None,
        help="layers shown in the heatmaps (default all) and the summary's token tables "
        "(default 5 evenly spaced); CSVs always hold every layer",
    )
    parser.add_argument(
        "--position", type=int, default=-1, help="stored position to read (-1 = the last)"
    )
    parser.add_argument(
        "--tokenizer",
        type=str | None,
        default=None,
        help="model name or folder whose tokenizer decodes the ids (default: the file's model)",
    )
    return parser


def run(argv: list[str], tokenizer: Any = None) -> int:
    """CLI entry; ``tokenizer`` (tests, notebooks) overrides the one named by the file or --tokenizer."""
    from probing.features.store import FeatureFile

    args = build_parser().parse_args(argv)
    emotions = load_emotions(args.emotions)
    ff = FeatureFile(args.features)
    layers = check_layers(args.layers, ff.num_layers) if args.layers is not None else None
    if tokenizer is None:
        tokenizer = file_tokenizer(ff.meta, args.tokenizer)
    result = analyse(ff, tokenizer, emotions, args.top, args.classes, args.position)
    out = Path(args.output)
    paths = write_csvs(result, out)
    paths += plot_all(result, out, layers)
    summary = out / "lens_summary.md"
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
    return 0
