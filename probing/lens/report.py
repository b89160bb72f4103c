"""The files of ``probing lens``: ``lens_consistency.csv``, ``lens_top_tokens.csv`` and ``lens_summary.md``.

Columns and definitions are in ``docs/lens.md``; every CSV holds every layer (0 = embeddings).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probing.lens.analysis import METRICS, LensAnalysis, TopToken, label
from probing.tables import write_csv

CONSISTENCY_COLUMNS = ("layer", "class", "n", "dominant_emotion", *METRICS)
TOP_TOKEN_COLUMNS = ("layer", "class", "rank", "token", "count", "emotion")
CONSISTENCY_NAME, TOP_TOKENS_NAME, SUMMARY_NAME = (
    "lens_consistency.csv",
    "lens_top_tokens.csv",
    "lens_summary.md",
)


def consistency_rows(result: LensAnalysis) -> list[dict[str, Any]]:
    """Rows of ``lens_consistency.csv`` (layer-major, classes in file order)."""
    rows = []
    for layer in range(result.num_layers):
        for c in result.classes.values():
            row = {
                "layer": layer,
                "class": c.name,
                "n": c.n,
                "dominant_emotion": c.dominant_emotion,
            }
            row.update({m: float(c.metrics[m][layer]) for m in METRICS})
            rows.append(row)
    return rows


def top_token_rows(result: LensAnalysis) -> list[dict[str, Any]]:
    """Rows of ``lens_top_tokens.csv`` (rank 1 = most frequent)."""
    return [
        {
            "layer": layer,
            "class": c.name,
            "rank": rank,
            "token": t.token,
            "count": t.count,
            "emotion": t.emotion,
        }
        for layer in range(result.num_layers)
        for c in result.classes.values()
        for rank, t in enumerate(c.top[layer], start=1)
    ]


def write_csvs(result: LensAnalysis, folder: str | os.PathLike) -> list[Path]:
    """``lens_consistency.csv`` and ``lens_top_tokens.csv`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_csv(folder / CONSISTENCY_NAME, consistency_rows(result), CONSISTENCY_COLUMNS),
        write_csv(folder / TOP_TOKENS_NAME, top_token_rows(result), TOP_TOKEN_COLUMNS),
    ]


def summary_layers(num_layers: int, count: int = 5) -> list[int]:
    """A few evenly spaced layers, embeddings and last layer included."""
    return sorted({int(round(x)) for x in np.linspace(0, num_layers - 1, min(count, num_layers))})


def _cell(t: TopToken) -> str:
    text = label(t.token).replace("|", "\\|").replace("*", "\\*").replace("`", "\\`")
    text = {"positive": f"**{text}**", "negative": f"*{text}*"}.get(t.emotion, text)
    return f"{text} ({t.count})"


def summary_markdown(
    result: LensAnalysis, layers: Sequence[int] | None = None, tokens: int = 5
) -> str:
    """``lens_summary.md``: per class the top tokens at a few layers and the consistency numbers."""
    layers = summary_layers(result.num_layers) if layers is None else list(layers)
    m = result.meta
    lines = [
        f"# Logit lens: {m.get('path', '')}",
        "",
        f"Model `{m.get('model', '')}` ({m.get('architecture', '')}), {m.get('rows', '?')} rows, "
        f"{result.num_layers} layers (0 = embeddings, {result.num_layers - 1} = after the final "
        f"norm), top-{result.top_k} lens tokens per layer at stored position {m.get('position', -1)} "
        f"of {m.get('num_positions', 1)} ('{m.get('positions', '')}'). Emotion lists: "
        f"`{m.get('emotions', '')}`. Definitions: docs/lens.md.",
        "",
    ]
    for c in result.classes.values():
        hit, cons = c.metrics["emotion_hit_rate"], c.metrics["topk_consistency"]
        lines += [
            f"## Class `{c.name}` (n = {c.n}, dominant emotion: {c.dominant_emotion})",
            "",
            f"Peak emotion_hit_rate {hit.max():.3f} at layer {int(hit.argmax())}; peak "
            f"topk_consistency {cons.max():.3f} at layer {int(cons.argmax())}.",
            "",
            f"Most frequent lens tokens (prompts of {c.n} with the token in their top-"
            f"{result.top_k}; **positive**, *negative*):",
            "",
            "| layer | " + " | ".join(str(r) for r in range(1, tokens + 1)) + " |",
            "|---:|" + "---|" * tokens,
        ]
        for layer in layers:
            cells = [_cell(t) for t in c.top[layer][:tokens]]
            cells += [""] * (tokens - len(cells))
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
        lines += ["", "| layer | " + " | ".join(METRICS) + " |", "|---:|" + "---:|" * len(METRICS)]
        for layer in range(result.num_layers):
            values = " | ".join(f"{c.metrics[k][layer]:.3f}" for k in METRICS)
            lines.append(f"| {layer} | {values} |")
        lines.append("")
    return "\n".join(lines)
