"""Plots of a :class:`~probing.lens.analysis.LensAnalysis` (matplotlib, Agg canvas, no pyplot state).

Tokens are drawn with a fallback font where the default lacks a character; characters no installed
font has are shown escaped (``\\u4e2d``), and the heatmap's legend says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from probing.layers import resolve_layers
from probing.lens.analysis import LensAnalysis, label
from probing.plotting import ESCAPED_NOTE, drawable, save_figure

COLOURS = {"negative": "#d62728", "positive": "#2ca02c", "neutral": "#9e9e9e"}
EMOTION_NAMES = {
    "negative": "negative / refusal",
    "positive": "positive / affirmation",
    "neutral": "neutral",
}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    return save_figure(fig, path)


def _title(result: LensAnalysis) -> str:
    model = result.meta.get("model")
    return f"Logit lens top-{result.top_k}" + (f", {model}" if model else "")


def plot_consistency(result: LensAnalysis, path: str | os.PathLike) -> Path:
    """``consistency.png``: emotion_hit_rate and topk_consistency per class over layers."""
    fig = _figure(11, 4)
    axes = fig.subplots(1, 2, sharex=True)
    x = np.arange(result.num_layers)
    for c in result.classes.values():
        axes[0].plot(
            x, c.metrics["emotion_hit_rate"], marker=".", label=f"{c.name} ({c.dominant_emotion})"
        )
        axes[1].plot(x, c.metrics["topk_consistency"], marker=".", label=c.name)
    axes[0].set_title("emotion hit rate (class's dominant emotion in top-K)")
    axes[1].set_title("top-K intermediate consistency")
    for ax in axes:
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("share of prompts")
    axes[1].set_ylabel("share of top-K slots")
    fig.suptitle(_title(result))
    return _save(fig, path)


def plot_emotion_mass(result: LensAnalysis, path: str | os.PathLike) -> Path:
    """``emotion_mass.png``: mean softmax mass (over the stored top-K) on negative/positive tokens."""
    fig = _figure(11, 4)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    x = np.arange(result.num_layers)
    for ax, emotion in zip(axes, ("negative", "positive")):
        for c in result.classes.values():
            ax.plot(x, c.metrics[f"{emotion}_mass"], marker=".", label=c.name)
        ax.set_title(f"{EMOTION_NAMES[emotion]} mass")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mean softmax mass within the top-K")
    axes[0].set_ylim(-0.02, 1.02)
    fig.suptitle(_title(result))
    return _save(fig, path)


def plot_heatmap(
    result: LensAnalysis,
    name: str,
    path: str | os.PathLike,
    layers: Sequence[int] | None = None,
    width: int = 9,
) -> Path:
    """``lens_heatmap_<class>.png``: see :func:`heatmap_figure`."""
    return _save(heatmap_figure(result, name, layers, width), path)


def heatmap_figure(
    result: LensAnalysis, name: str, layers: Sequence[int] | None = None, width: int = 9
) -> Figure:
    """Layers × frequency rank, cells labelled with the token (escaped where no font has it).

    Colour is the token's emotion; its strength is the share of the class's prompts with the token
    in their top-K at that layer. The last layer is at the top.
    """
    c = result.classes[name]
    layers = resolve_layers(layers, result.num_layers, "--layers")
    top = max((len(c.top[layer]) for layer in layers), default=1) or 1
    image = np.ones((len(layers), top, 3))
    fig = _figure(1.4 + 0.95 * top, 1.4 + 0.3 * len(layers))
    ax = fig.subplots()
    any_escaped = False
    for row, layer in enumerate(layers):
        for rank, t in enumerate(c.top[layer]):
            share = t.count / c.n
            alpha = 0.15 + 0.85 * share
            image[row, rank] = (1 - alpha) + alpha * np.array(to_rgb(COLOURS[t.emotion]))
            dark = alpha > 0.6 and t.emotion != "neutral"
            text, families, escaped = drawable(label(t.token, width))
            any_escaped |= escaped
            ax.text(
                rank,
                row,
                text,
                ha="center",
                va="center",
                fontsize=7,
                fontfamily=families,
                color="white" if dark else "black",
            )
    ax.imshow(image, aspect="auto", origin="lower", interpolation="nearest")
    ax.set_xticks(range(top), [str(r) for r in range(1, top + 1)])
    step = max(1, len(layers) // 40)
    ax.set_yticks(
        range(0, len(layers), step), [str(layers[i]) for i in range(0, len(layers), step)]
    )
    ax.set_xlabel("frequency rank within the class (1 = in most prompts' top-K)")
    ax.set_ylabel("layer (0 = embeddings)")
    ax.set_xticks(np.arange(-0.5, top, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(layers), 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    ax.set_title(
        f"{_title(result)}: class {name!r} (n = {c.n}); colour strength = share of prompts",
        fontsize=9,
    )
    handles = [Patch(color=COLOURS[e], label=EMOTION_NAMES[e]) for e in COLOURS]
    if any_escaped:
        handles.append(Patch(color="none", label=ESCAPED_NOTE))
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig


def safe_name(name: str) -> str:
    """A class name usable in a file name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "class"


def plot_all(
    result: LensAnalysis, folder: str | os.PathLike, layers: Sequence[int] | None = None
) -> list[Path]:
    """Every plot into ``folder``: consistency, emotion mass and one heatmap per class."""
    folder = Path(folder)
    paths = [
        plot_consistency(result, folder / "consistency.png"),
        plot_emotion_mass(result, folder / "emotion_mass.png"),
    ]
    for name in result.classes:
        paths.append(
            plot_heatmap(result, name, folder / f"lens_heatmap_{safe_name(name)}.png", layers)
        )
    return paths
