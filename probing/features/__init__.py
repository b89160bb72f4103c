"""Stage 2: per-layer activations in HDF5 feature files (see docs/feature-format.md).

The names are imported on first use, so that the light option modules (``extract_config``,
``info_config``, ``merge_config``, read by ``--help``) do not import h5py.
"""

from probing.lazy import lazy_names

__all__, __getattr__ = lazy_names(
    __name__,
    {
        "writer": ["FeatureWriter"],
        "store": ["FeatureFile", "RowTable", "read_meta"],
    },
)
