"""Stage 4b: does a probe generalise? Leave-one-source-out and train→test matrices over prompt sources.

The names are imported on first use, so that ``probing.generalize.config`` (read by ``--help``) does
not import torch.
"""

from typing import Any

__all__ = ["fit_heads", "score_heads"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from probing.generalize import fit

        return getattr(fit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
