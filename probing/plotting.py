"""Saving figures the same way everywhere (PNG, 120 dpi, parent folders created)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` and release it if pyplot manages it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # tokens in scripts the font lacks draw as boxes
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from")
        fig.savefig(path, dpi=120)
    if getattr(fig, "number", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path
