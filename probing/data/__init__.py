"""Stage 3: feature files as Lightning data (per-layer activation batches, splits, standardisation).

The names are imported on first use, so that the light submodules (``probing.data.options``, read by
``--help``) do not import Lightning.
"""

from typing import Any

__all__ = ["ActivationDataModule", "DataOptions", "stratified_split"]


def __getattr__(name: str) -> Any:
    if name == "DataOptions":
        from probing.data import options

        return options.DataOptions
    if name == "stratified_split":
        from probing.data import selection

        return getattr(selection, name)
    if name == "ActivationDataModule":
        from probing.data import datamodule

        return datamodule.ActivationDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
