"""Stage 3: feature files as Lightning data (per-layer activation batches, splits, standardisation).

The names are imported on first use, so that the light submodules (``probing.data.options``, read by
``--help``) do not import Lightning.
"""

from probing.lazy import lazy_names

__all__, __getattr__ = lazy_names(
    __name__,
    {
        "options": ["DataOptions"],
        "selection": ["stratified_split"],
        "datamodule": ["ActivationDataModule"],
    },
)
