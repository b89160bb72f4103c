"""Stage 3: feature files as Lightning data (per-layer activation batches, splits, standardisation)."""

from probing.data.datamodule import ActivationDataModule, parse_layers, stratified_split

__all__ = ["ActivationDataModule", "parse_layers", "stratified_split"]
