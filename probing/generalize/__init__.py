"""Stage 4b: does a probe generalise? Per-source metrics, leave-one-source-out and train→test matrices."""

from probing.generalize.fit import fit_heads, score_heads
from probing.generalize.metrics import METRIC_COLUMNS, per_source_rows, source_metrics

__all__ = ["METRIC_COLUMNS", "fit_heads", "per_source_rows", "score_heads", "source_metrics"]
