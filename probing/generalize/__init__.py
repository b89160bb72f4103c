"""Stage 4b: does a probe generalise? Leave-one-source-out and train→test matrices over prompt sources.

The names are imported on first use, so that ``probing.generalize.config`` (read by ``--help``) does
not import torch.
"""

from probing.lazy import lazy_names

__all__, __getattr__ = lazy_names(
    __name__,
    {
        "fit": ["fit_heads", "score_heads"],
    },
)
