"""``ActivationDataModule``: batches of last-token activations ``[B, L, D]`` and labels from a feature file.

Rows are filtered and relabelled by a class selection, split into stratified train/val/test parts with
a fixed seed, and (by default) standardised per layer and dimension with train statistics. The chosen
layer block is loaded into memory when it fits (logged); otherwise batches are read from the HDF5
file in whole chunks. Every process (DDP rank, DataLoader worker) opens the file itself.

What a probe needs from the data is given to it at instantiation (``probing fit`` links the
attributes named in :mod:`probing.probes.linked`; :meth:`ActivationDataModule.probe_args` gives all of
them to a probe built in Python): shapes, classes, the train statistics, the feature identity and
whether the training split comes as one batch. With ``batch_size: full`` the training loader yields
that one batch with the validation rows, ``(x, y, rows, val_x, val_y)``. The split's file rows are
saved in checkpoints (:meth:`~ActivationDataModule.state_dict`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal, final

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from probing.data.options import args_doc, full_batch_applies
from probing.data.rows import (
    ChunkRows,
    FullBatch,
    MemoryRows,
    RowSource,
    available_bytes,
    cat_batches,
    describe_rows,
    moments,
    read_rows,
)
from probing.data.selection import (
    check_split,
    class_indices,
    held_mask,
    resolve_classes,
    stratified_split,
)
from probing.errors import ProbingError
from probing.features.checks import check_finite
from probing.features.identity import feature_identity, require_same_identity
from probing.features.labels import read_label_set
from probing.features.positions import resolve_position
from probing.features.store import FeatureFile
from probing.layers import LayerSpec, layers_text, resolve_layers
from probing.probes.linked import LINKED, LINKED_UNCHECKED

log = logging.getLogger(__name__)

# Metadata a transfer test file must share with the training file (same model, same extraction).
FULL_FALLBACK_BATCH = 256  # batch_size: full on data that is not in memory (or several processes)


@final  # always this class: jsonargparse adds its options flat (`--data.path`), not as a subclass
class ActivationDataModule(L.LightningDataModule):
    # its options' help is DataOptions' (one text for `probing fit --help` and `probing weak --help`)
    __doc__ = (
        "Per-layer activations of a feature file as batches ``(x [B, L, D] float32, y [B], row [B])``."
        "\n\n" + args_doc()
    )

    def __init__(
        self,
        path: str,
        layers: LayerSpec = "all",
        classes: list[str] | None = None,
        class_map: dict[str, str] | None = None,
        label: str = "label",
        position: int | str = -1,
        split: tuple[float, float, float] = (0.7, 0.15, 0.15),
        seed: int = 42,
        standardize: bool = True,
        test_path: str | None = None,
        holdout_sources: list[str] | None = None,
        batch_size: int | Literal["full"] = 128,
        num_workers: int = 0,
        in_memory: Literal["auto", "always", "never"] = "auto",
        memory_limit_gb: float | None = None,
    ):
        hparams = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.path, self.test_path = str(path), (str(test_path) if test_path else None)
        self.seed, self.standardize = seed, standardize
        self.batch_size, self.num_workers = batch_size, num_workers
        self.in_memory, self.memory_limit_gb = in_memory, memory_limit_gb
        self.class_map = dict(class_map or {})
        if batch_size != "full" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ProbingError(
                f"--data.batch_size must be a positive integer or 'full', got {batch_size!r}"
            )
        self.split_fractions = check_split(split)

        ff = FeatureFile(self.path)
        self.meta = ff.meta
        self.num_layers, self.hidden_size = ff.num_layers, ff.hidden_size
        raw, self.label_names = read_label_set(ff, label, "--data.label")
        self.position = resolve_position(ff.meta, position, "--data.position", self.path)
        self.layers = resolve_layers(layers, self.num_layers, "--data.layers", str(ff.path))
        # Saved with the resolved layer list, equal to the model's (Lightning merges both hparams).
        self.save_hyperparameters({**hparams, "layers": self.layers})
        present = [self.label_names[i] for i in np.unique(raw) if 0 <= i < len(self.label_names)]
        test_ff = self._open_test(ff) if self.test_path else None
        test_y, known = read_label_set(test_ff, label, "--data.label") if test_ff else (None, ())
        what = "the feature file" if label == "label" else f"the label set {label!r}"
        self.class_names = resolve_classes(
            self.label_names, present, classes, self.class_map, known, what
        )
        y = class_indices(raw, self.label_names, self.class_names, self.class_map)
        keep = np.flatnonzero(y >= 0)
        self.source_names = ff.source_names
        row_source = np.asarray(ff.sources, dtype=np.int64)
        ff.close()
        self.holdout_sources = list(holdout_sources or [])
        held = held_mask(
            row_source[keep], self.holdout_sources, self.source_names, self.class_names, self.path
        )
        main, out = keep[~held], keep[held]
        self.sources = {"main": RowSource(ff, main, y[main], row_source[main])}
        if len(out):
            self.sources["heldout"] = RowSource(ff, out, y[out], row_source[out])
        missing = sorted(set(range(self.num_classes)) - set(y[main].tolist()))
        if missing and self.holdout_sources:
            raise ProbingError(
                f"--data.holdout_sources {self.holdout_sources} leaves no training rows of class "
                f"{self.class_names[missing[0]]!r}; hold out fewer sources"
            )
        parts = stratified_split(y[main], self.split_fractions, seed)
        self.split_pos = dict(zip(("train", "val", "test"), parts, strict=False))
        if len(self.split_pos["train"]) == 0:
            raise ProbingError(f"--data.split={list(split)} leaves no training rows")
        if test_ff is not None:
            ty = class_indices(test_y, known, self.class_names, self.class_map)
            tkeep = np.flatnonzero(ty >= 0)
            test_ff.close()
            if len(tkeep) == 0:
                raise ProbingError(
                    f"--data.test_path {self.test_path} has no rows of the selected classes {self.class_names} "
                    f"(its classes: {known}); map them with --data.class_map"
                )
            tsrc = np.asarray(test_ff.sources, dtype=np.int64)[tkeep]
            self.sources["transfer"] = RowSource(test_ff, tkeep, ty[tkeep], tsrc)
        self.stats: tuple[np.ndarray, np.ndarray] | None = None
        self._datasets: dict[str, Dataset] = {}
        self._ready = False

    def state_dict(self) -> dict[str, Any]:
        """In checkpoints (Lightning's key: the class name): the training file's absolute path and
        fingerprint, so that `probing monitor` finds that file from any folder (``path`` is as given),
        and the file rows of each split (``train``, ``val``, ``test``, ``heldout``; int64 tensors), so
        that it reads the run's split instead of rebuilding it."""
        main = self.sources["main"].rows
        rows = {name: main[pos] for name, pos in self.split_pos.items()}
        if "heldout" in self.sources:
            rows["heldout"] = self.sources["heldout"].rows
        return {
            "path": os.path.abspath(self.path),
            "fingerprint": self.meta.get("fingerprint"),
            "split_rows": {
                k: torch.as_tensor(np.sort(v), dtype=torch.int64) for k, v in rows.items()
            },
        }

    # -- given to the probe at instantiation (linked by the CLI; probe_args) -----------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def feature_meta(self) -> dict[str, Any]:
        """The training features' identity (model, template, ...), kept in the probe's checkpoint."""
        return feature_identity(self.meta)

    @property
    def input_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Train mean and std ``[L, D]`` of the raw activations (None without standardisation); reads
        the data (the probe keeps them to score activations read straight from a model)."""
        self.setup()
        return self.stats

    @property
    def full_batch(self) -> bool:
        """``batch_size: full`` and the layer block in memory: the training split as one batch (one
        process only; see :func:`~probing.data.options.full_batch_applies`)."""
        in_memory = self.sources["main"].x is not None if self._ready else self.fits_in_memory()
        return self.batch_size == "full" and in_memory

    def probe_args(self) -> dict[str, Any]:
        """Everything a probe takes from this data, as keyword arguments of a probe class."""
        return {name: getattr(self, name) for name in (*LINKED, *LINKED_UNCHECKED)}

    @property
    def test_split_name(self) -> str:
        return "transfer" if self.test_path else "test"

    def source_rows(self, split: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """``(x [n, L, D] standardised, y [n], source name per row)`` of ``split`` (``train``,
        ``val``, ``test``, ``heldout``, ``transfer``); for per-source reports."""
        self.setup()
        if split in ("heldout", "transfer"):
            src = self.sources.get(split)
            if src is None:
                return torch.zeros(0), np.zeros(0, np.int64), np.zeros(0, object)
            pos = np.arange(len(src.rows))
        else:
            src, pos = self.sources["main"], self.split_pos[split]
        names = src.ff.source_names if split == "transfer" else self.source_names
        return read_rows(src, pos, self.layers, self.position, self.stats, names)

    def _open_test(self, ff: FeatureFile) -> FeatureFile:
        test_ff = FeatureFile(self.test_path)
        require_same_identity(
            ff.meta, test_ff.meta,
            "--data.test_path {test} comes from a different model or extraction: "
            "{key}={b!r} there but {a!r} in --data.path {path}",
            test=self.test_path, path=self.path,
        )  # fmt: skip
        given = self.hparams["position"]
        if (
            resolve_position(test_ff.meta, given, "--data.position", self.test_path)
            != self.position
        ):
            raise ProbingError(
                f"--data.position={given!r} is another stored position in --data.test_path "
                f"{self.test_path} than in --data.path {self.path}; give files of one extraction"
            )
        return test_ff

    # -- loading ------------------------------------------------------------------------------------
    def block_bytes(self) -> int:
        rows = sum(len(s.rows) for s in self.sources.values())
        return rows * len(self.layers) * self.hidden_size * 4

    def fits_in_memory(self) -> bool:
        if self.in_memory != "auto":
            return self.in_memory == "always"
        limit = (
            self.memory_limit_gb * 1e9
            if self.memory_limit_gb is not None
            else available_bytes() / 2
        )
        return self.block_bytes() <= limit

    def read_layer(self, layer: int, source: str = "main") -> np.ndarray:
        """Raw activations ``[kept rows, D]`` float32 of one absolute layer; checks they are finite."""
        src = self.sources[source]
        # one layer for all rows: a contiguous read of whole chunks
        x = src.ff.states(slice(None), [layer], self.position)[:, 0]
        if len(src.rows) != len(x):
            x = x[src.rows]
        x = np.asarray(x, dtype=np.float32)
        check_finite(x, src.rows, src.ff.path, layer)
        return x

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        if self.fits_in_memory():
            self._load_memory()
        else:
            self._prepare_chunked()
        self._ready = True

    def _one_batch(self) -> bool:
        """The training split as one batch in this run (the probe applies the same rule)."""
        trainer = getattr(self, "trainer", None)
        world = getattr(trainer, "world_size", 1) if trainer is not None else 1
        return full_batch_applies(self.full_batch, world)

    def _load_memory(self) -> None:
        gb = self.block_bytes() / 1e9
        log.info(
            "loading layers %s of %s into memory (%.2f GB float32)",
            layers_text(self.layers),
            ", ".join(str(s.ff.path) for s in self.sources.values()),
            gb,
        )
        for name, src in self.sources.items():
            x = np.empty((len(src.rows), len(self.layers), self.hidden_size), dtype=np.float32)
            for j, layer in enumerate(self.layers):
                x[:, j] = self.read_layer(layer, name)
            src.x = torch.from_numpy(x)
            src.ff.close()
        if self.standardize:
            main = self.sources["main"].x
            mean, std = moments(main, self.split_pos["train"])
            self.stats = (mean.numpy(), std.numpy())
            for src in self.sources.values():
                src.x.sub_(mean).div_(std)

    def _prepare_chunked(self) -> None:
        log.info(
            "layer block (%.2f GB float32) does not fit memory_limit_gb; reading batches from %s in HDF5 chunks",
            self.block_bytes() / 1e9,
            self.path,
        )
        mean = np.zeros((len(self.layers), self.hidden_size), np.float32)
        std = np.ones_like(mean)
        train = self.split_pos["train"]
        for j, layer in enumerate(self.layers):
            x = self.read_layer(layer)
            for other in set(self.sources) - {"main"}:
                self.read_layer(layer, other)
            if self.standardize:
                m, s = moments(torch.from_numpy(x[:, None]), train)
                mean[j], std[j] = m[0].numpy(), s[0].numpy()
        self.stats = (mean, std) if self.standardize else None
        for src in self.sources.values():
            src.ff.close()

    def _dataset(self, name: str) -> Dataset:
        if name not in self._datasets:
            self.setup()
            if name == "transfer":
                src, pos = self.sources["transfer"], np.arange(len(self.sources["transfer"].rows))
            elif name == "all":
                src, pos = self.sources["main"], np.arange(len(self.sources["main"].rows))
            else:
                src, pos = self.sources["main"], self.split_pos[name]
            if src.x is not None:
                self._datasets[name] = MemoryRows(src, pos)
            else:
                self._datasets[name] = ChunkRows(src, pos, self.layers, self.position, self.stats)
        return self._datasets[name]

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        ds = self._dataset(name)
        batch = self.batch_size
        if batch == "full":
            batch = FULL_FALLBACK_BATCH
        if isinstance(ds, ChunkRows):
            per_block = max(1.0, sum(len(b[2]) for b in ds.blocks) / max(len(ds), 1))
            batch = max(1, round(batch / per_block))
        return DataLoader(
            ds,
            batch_size=batch,
            shuffle=shuffle,
            collate_fn=cat_batches,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.batch_size == "full" and self._one_batch():
            batch = FullBatch(self._dataset("train"), self._dataset("val"))
            return DataLoader(batch, batch_size=None)  # its one item is the batch
        if self.batch_size == "full":
            log.info(
                "--data.batch_size full needs the layer block in memory and one process; "
                "using mini-batches of %d rows",
                FULL_FALLBACK_BATCH,
            )
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if len(self.split_pos["val"]) == 0:
            return []
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if self.test_path:
            return self._loader("transfer", shuffle=False)
        if len(self.split_pos["test"]) == 0:
            raise ProbingError(
                "--data.split has a test fraction of 0 and no --data.test_path is given"
            )
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Every kept row of ``test_path`` when given, else of ``path`` (with its split in the output)."""
        return self._loader("transfer" if self.test_path else "all", shuffle=False)

    def prompts(self, source: str = "main") -> np.ndarray:
        """The ``prompt`` of every kept row of ``source`` (``main``, ``heldout``, ``transfer``), in the
        order of its rows (index it with ``split_pos``): the text baseline's input."""
        src = self.sources[source]
        with FeatureFile(src.ff.path) as ff:
            return np.asarray(ff.column("prompt"), dtype=object)[src.rows]

    # -- row descriptions for predictions ---------------------------------------------------------
    def describe_rows(self, rows: np.ndarray, source: str | None = None) -> dict[str, list]:
        """``prompt_index``, ``split`` and class name of file rows of the predict set."""
        source = source or ("transfer" if self.test_path else "main")
        splits = {"main": self.split_pos, "transfer": {"transfer": None}}.get(source, {})
        return describe_rows(self.sources[source], splits, self.class_names, rows)
