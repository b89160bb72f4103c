"""Stage 2: per-layer activations in HDF5 feature files (see docs/feature-format.md)."""

from probing.features.store import FeatureFile, RowTable, read_meta
from probing.features.writer import FeatureWriter

__all__ = ["FeatureFile", "FeatureWriter", "RowTable", "read_meta"]
