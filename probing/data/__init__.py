"""Stage 3: feature files as Lightning data (per-layer activation batches, splits, standardisation)."""

from probing.data.datamodule import ActivationDataModule, stratified_split

__all__ = ["ActivationDataModule", "stratified_split"]
