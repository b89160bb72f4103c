"""Stage 2: per-layer activations in HDF5 feature files (see docs/feature-format.md).

The names are imported on first use, so that the light option modules (``extract_config``,
``info_config``, ``merge_config``, read by ``--help``) do not import h5py.
"""

from typing import Any

__all__ = ["FeatureFile", "FeatureWriter", "RowTable", "read_meta"]


def __getattr__(name: str) -> Any:
    if name == "FeatureWriter":
        from probing.features import writer

        return writer.FeatureWriter
    if name in __all__:
        from probing.features import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
