"""The options of :class:`~probing.data.ActivationDataModule` as a plain dataclass: the one text of
their help (``probing fit --help``, ``probing weak --help``), read without importing Lightning."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Literal

from probing.layers import LayerSpec


@dataclass
class DataOptions:
    """The feature file and which of its rows, layers, classes and split are read.

    Args:
        path: Feature file (HDF5) written by ``probing extract``.
        layers: Layers to probe: ``all``, an index, a list ``[i, j]``, or a range ``"start:stop[:step]"``
            (Python slicing; 0 = embeddings, i = output of decoder block i).
        classes: Class names to keep, in class-index order (default: every class present, file order).
            Binary when two classes (positive = the second), multiclass otherwise.
        class_map: Renames/merges classes before selection, e.g. ``{jailbreak: malicious}``.
        label: Label set to train on: ``label``, the prompts' classes (default), or one the file
            adds, e.g. ``refused`` (the model refused / complied, from ``probing refusal --features``;
            rows without a verdict are left out): ``classes``/``class_map`` then name its classes.
        position: Stored token position: an index (``-1`` = the last stored) or a name the file
            records (``probing info`` lists them), e.g. ``inst`` or ``post_2`` of ``--positions
            template``; ``last`` is the last prompt token (docs/positions.md).
        split: Train/val/test fractions (stratified per class). A val fraction of 0 disables validation.
        seed: Seed of the split.
        standardize: Standardise each layer and dimension with train-split mean and std.
        test_path: A feature file of the same model to test on instead of the test split (transfer);
            its classes are mapped by name through ``class_map``/``classes``; unknown ones are dropped.
        holdout_sources: Prompt sources (names as ``probing info`` lists them) kept out of training,
            validation and the test split entirely: the probe never sees them, and the per-source report
            (``per_source_metrics.csv``) shows how it does on them.
        batch_size: Rows per batch, or ``full``: every split is one batch (the whole training split in
            one step) when the layer block is in memory and the run is one process; the probes then
            fit in one pass (L-BFGS for linear heads, full-batch AdamW with per-layer early stopping
            for MLP heads). Otherwise ``full`` falls back to mini-batches of 256 rows (logged).
        num_workers: DataLoader workers (only useful for chunked reads).
        in_memory: ``auto`` loads the layer block into memory when it fits ``memory_limit_gb``,
            ``always``/``never`` force it.
        memory_limit_gb: Memory allowed for the float32 block (default: half the available memory).
    """

    path: str
    layers: LayerSpec = "all"
    classes: list[str] | None = None
    class_map: dict[str, str] | None = None
    label: str = "label"
    position: int | str = -1
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 42
    standardize: bool = True
    test_path: str | None = None
    holdout_sources: list[str] | None = None
    batch_size: int | Literal["full"] = 128
    num_workers: int = 0
    in_memory: Literal["auto", "always", "never"] = "auto"
    memory_limit_gb: float | None = None

    def kwargs(self) -> dict[str, object]:
        """The options as keyword arguments of ``ActivationDataModule``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def args_doc() -> str:
    """The ``Args:`` section of :class:`DataOptions` (for the data module's docstring)."""
    doc = inspect.cleandoc(DataOptions.__doc__ or "")
    return doc[doc.index("Args:") :]


def full_batch_applies(requested: bool, world_size: int) -> bool:
    """Whether a run fits on the training split as one batch: ``batch_size: full`` with the block in
    memory (``requested``) and one process; the data's loader and the probe's fitting both ask here."""
    return bool(requested) and world_size == 1
