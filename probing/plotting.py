"""Figures made the same way everywhere: no pyplot state, fonts for every token, PNG at 120 dpi.

Library code never chooses matplotlib's backend: :func:`subplots` draws on its own Agg canvas
(``matplotlib.figure.Figure`` + ``FigureCanvasAgg``), so a notebook's or script's backend
(``%matplotlib inline``, ``MPLBACKEND``, ``matplotlib.use``) is left as its user set it, and nothing
is needed on a headless machine. :func:`drawable` makes a token's text drawable with the installed
fonts: characters the default font lacks use a fallback font that has them, or are escaped
(``\\u4e2d``) when no installed font has them.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font

ESCAPED_NOTE = "\\uXXXX: a character no installed font can draw"


def subplots(
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None, **kwargs: Any
) -> tuple[Figure, Any]:
    """``plt.subplots`` without pyplot: a figure on its own Agg canvas and its axes.

    ``layout`` goes to the figure; every other keyword (``sharex``, ``squeeze``, ...) to
    ``Figure.subplots``.
    """
    fig = Figure(figsize=figsize, layout=kwargs.pop("layout", None))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` and release it if pyplot manages it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # labels other than tokens (prompt names) may lack glyphs
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from")
        fig.savefig(path, dpi=120)
    if getattr(fig, "number", None) is not None:
        import matplotlib.pyplot as plt  # only a figure the caller made with pyplot

        plt.close(fig)
    return path


@functools.cache
def _charmap(font_file: str) -> frozenset[int]:
    try:
        return frozenset(FT2Font(font_file).get_charmap())
    except (OSError, RuntimeError, ValueError):  # unreadable font file: it draws nothing
        return frozenset()


@functools.cache
def _fallback_family(codepoint: int) -> str | None:
    """The family name of an installed font that has ``codepoint``, or None.

    matplotlib's "Last Resort" font does not count: its glyphs are the boxes this avoids.
    """
    for entry in font_manager.fontManager.ttflist:
        if not entry.name.startswith("Last Resort") and codepoint in _charmap(entry.fname):
            return entry.name
    return None


def drawable(text: str) -> tuple[str, list[str], bool]:
    """``(text, font families, escaped)``: ``text`` as it can be drawn with the installed fonts.

    Characters the default font (``rcParams["font.family"]``) lacks add an installed font that has
    them to the families (matplotlib falls back along the list); a character no installed font has
    is written ``\\uXXXX`` (``\\UXXXXXXXX`` above U+FFFF) and ``escaped`` is True.
    """
    default = _charmap(font_manager.findfont(font_manager.FontProperties()))
    families = list(matplotlib.rcParams["font.family"])
    out, escaped = [], False
    for ch in text:
        cp = ord(ch)
        if cp in default:
            out.append(ch)
            continue
        family = _fallback_family(cp) if ch.isprintable() else None
        if family is None:
            out.append(f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}")
            escaped = True
            continue
        if family not in families:
            families.append(family)
        out.append(ch)
    return "".join(out), families, escaped
