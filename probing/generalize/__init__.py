"""Stage 4b: does a probe generalise? Leave-one-source-out and train→test matrices over prompt sources."""

from probing.generalize.fit import fit_heads, score_heads

__all__ = ["fit_heads", "score_heads"]
