"""The feature file: HDF5 layout, streaming writer and checked reader.

The layout is documented in ``docs/feature-format.md``; this module is its only writer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from probing.errors import ProbingError
from probing.features.atomic import (
    WriteLock,
    being_written,
    busy_error,
    final_path,
    fsync_path,
    partial_path,
)
from probing.features.checks import check_layout, check_links
from probing.prompts.sources import source_names

FORMAT = "probing-features"
FORMAT_VERSION = 1
FP16_MAX = 65504.0
CHUNK_BYTES = 512 * 1024
JSON_ATTRS = ("label_names", "sources", "skipped", "config", "shards")
_STR = h5py.string_dtype("utf-8")


@dataclass
class RowTable:
    """Per-row metadata, known before any activation is computed (rows in processing order)."""

    prompt: list[str]
    rendered: list[str]
    label: np.ndarray
    prompt_index: np.ndarray
    source: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray | None = None  # bool per row: cut to --max_tokens (None: none was)

    def __len__(self) -> int:
        return len(self.prompt)


def _chunk_rows(per_row_bytes: int, n_rows: int) -> int:
    return int(max(1, min(max(n_rows, 1), CHUNK_BYTES // max(per_row_bytes, 1))))


def _encode_attr(key: str, value: Any) -> Any:
    if key in JSON_ATTRS:
        return json.dumps(value)
    return value


def decode_attrs(attrs: h5py.AttributeManager) -> dict[str, Any]:
    """Attributes as plain Python values, JSON attributes parsed."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, np.generic):
            value = value.item()
        if key in JSON_ATTRS and isinstance(value, str):
            value = json.loads(value)
        out[key] = value
    return out


class FeatureWriter:
    """Appends batches of rows to a feature file; marks it complete only in :meth:`finish`.

    Rows go to ``OUTPUT.partial`` under an exclusive ``OUTPUT.lock`` (see :mod:`probing.features.atomic`);
    :meth:`finish` renames the complete file to ``OUTPUT``, so a finished file is never half-written.
    """

    def __init__(self, file: h5py.File, path: Path | None = None, lock: WriteLock | None = None):
        self.file = file
        self.path = final_path(path if path is not None else file.filename)
        self.lock = lock
        self.hidden = file["hidden"]
        self.lens_ids = file["lens_ids"]
        self.lens_logits = file["lens_logits"]
        self._rows_done = file["rows_done"]
        self.storage_dtype = np.dtype(file.attrs["storage_dtype"])

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        meta: dict[str, Any],
        rows: RowTable,
        *,
        num_layers: int,
        num_positions: int,
        hidden_size: int,
        top_k: int,
        storage_dtype: str,
        lock: WriteLock | None = None,
    ) -> FeatureWriter:
        """Create a new (incomplete) ``path.partial`` holding ``rows``' metadata.

        ``lock`` is the caller's held :class:`WriteLock` of ``path``; without one it is taken here.
        """
        path = Path(path)
        n = len(rows)
        lock = lock if lock is not None else WriteLock(path).acquire()
        try:
            file = h5py.File(partial_path(path), "w")
        except OSError as err:
            lock.release()
            raise ProbingError(
                f"cannot write the feature file {path}: {err.strerror or err}; "
                "choose a writable location with --output"
            ) from None
        dtype = np.dtype(storage_dtype)
        row_bytes = num_positions * hidden_size * dtype.itemsize
        r = _chunk_rows(row_bytes, n)
        file.create_dataset(
            "hidden",
            shape=(n, num_layers, num_positions, hidden_size),
            dtype=dtype,
            chunks=(r, 1, num_positions, hidden_size),
        )
        lens_shape = (n, num_layers, num_positions, top_k)
        lens_rows = _chunk_rows(num_layers * num_positions * top_k * 4, n)
        # lens off (top_k 0): zero-width datasets, which HDF5 cannot chunk
        lens_chunks = (lens_rows, num_layers, num_positions, top_k) if top_k else None
        file.create_dataset("lens_ids", shape=lens_shape, dtype=np.int32, chunks=lens_chunks)
        file.create_dataset("lens_logits", shape=lens_shape, dtype=np.float32, chunks=lens_chunks)
        file.create_dataset("label", data=np.asarray(rows.label, dtype=np.int64))
        file.create_dataset("prompt_index", data=np.asarray(rows.prompt_index, dtype=np.int64))
        file.create_dataset("source", data=np.asarray(rows.source, dtype=np.int64))
        file.create_dataset("n_tokens", data=np.asarray(rows.n_tokens, dtype=np.int64))
        truncated = np.zeros(n, dtype=bool) if rows.truncated is None else rows.truncated
        file.create_dataset("truncated", data=np.asarray(truncated, dtype=bool))
        file.create_dataset("prompt", data=rows.prompt, dtype=_STR)
        file.create_dataset("rendered", data=rows.rendered, dtype=_STR)
        file.create_dataset("rows_done", data=np.zeros(1, dtype=np.int64))
        attrs = {
            **meta,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "complete": False,
            "storage_dtype": dtype.name,
            "num_layers": num_layers,
            "num_positions": num_positions,
            "hidden_size": hidden_size,
            "lens_top_k": top_k,
        }
        for key, value in attrs.items():
            file.attrs[key] = _encode_attr(key, value)
        file.flush()
        return cls(file, path, lock)

    @classmethod
    def reopen(cls, path: str | os.PathLike, lock: WriteLock | None = None) -> FeatureWriter:
        """Open the incomplete ``path.partial`` to continue writing after its last flushed row."""
        path = Path(path)
        lock = lock if lock is not None else WriteLock(path).acquire()
        try:
            file = h5py.File(partial_path(path), "r+")
        except OSError as err:
            lock.release()
            raise ProbingError(
                f"cannot reopen {partial_path(path)} to resume ({err}); start over with --overwrite"
            ) from None
        return cls(file, path, lock)

    @property
    def num_rows(self) -> int:
        return int(self.hidden.shape[0])

    @property
    def rows_done(self) -> int:
        return int(self._rows_done[0])

    def write(self, hidden: np.ndarray, lens_ids: np.ndarray, lens_logits: np.ndarray) -> None:
        """Write the next ``B`` rows: hidden ``[B, L, P, D]``, lens ``[B, L, P, K]``."""
        start = self.rows_done
        stop = start + hidden.shape[0]
        if stop > self.num_rows:
            raise ValueError(f"writing rows {start}:{stop} past the end ({self.num_rows})")
        if self.storage_dtype == np.float16:
            peak = float(np.abs(hidden).max()) if hidden.size else 0.0
            if not np.isfinite(peak) or peak > FP16_MAX:
                raise ProbingError(
                    f"activation magnitude {peak:.4g} in rows {start}:{stop} does not fit float16 "
                    f"(max {FP16_MAX:.0f}); rerun with --storage_dtype float32 --overwrite"
                )
        self.hidden[start:stop] = hidden.astype(self.storage_dtype, copy=False)
        self.lens_ids[start:stop] = lens_ids
        self.lens_logits[start:stop] = lens_logits
        self.file.flush()
        self._rows_done[0] = stop
        self.file.flush()

    def set_attr(self, key: str, value: Any) -> None:
        self.file.attrs[key] = _encode_attr(key, value)

    def finish(self) -> None:
        """Mark the file complete and move it into place; only call after every row is written."""
        if self.rows_done != self.num_rows:
            raise ValueError(f"finish() with {self.rows_done} of {self.num_rows} rows written")
        self.file.attrs["complete"] = True
        self.file.flush()
        tmp = Path(self.file.filename)
        self.file.close()
        if tmp != self.path:
            fsync_path(tmp)
            os.replace(tmp, self.path)
        self.close()

    def close(self) -> None:
        """Close the file and release the lock (an unfinished file stays in ``OUTPUT.partial``)."""
        if self.file.id.valid:
            self.file.close()
        if self.lock is not None:
            self.lock.release()


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of a feature file, without checking that it is complete."""
    path = Path(path)
    if not path.exists():
        if partial_path(path).exists():
            if being_written(path):
                raise busy_error(path)
            raise ProbingError(
                f"{path} is incomplete: an interrupted extraction left its rows in "
                f"{partial_path(path)}; finish it with `probing extract --resume` and the same "
                "config, or re-extract with --overwrite"
            )
        raise ProbingError(
            f"feature file {path} does not exist; run `probing extract` first or fix the path"
        )
    try:
        with h5py.File(path, "r") as f:
            meta = decode_attrs(f.attrs)
    except OSError as err:
        if being_written(path):
            raise busy_error(path) from None
        raise ProbingError(f"{path} is not a readable HDF5 file ({err}); re-extract it") from None
    except ValueError as err:  # a JSON attribute that does not parse
        raise ProbingError(
            f"{path}: an attribute is not valid JSON ({err}); the file is damaged or was edited: "
            "re-extract it"
        ) from None
    if meta.get("format") != FORMAT:
        raise ProbingError(
            f"{path} is an HDF5 file but not a probing feature file (no format={FORMAT!r} attribute)"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise ProbingError(
            f"{path} has feature format version {meta.get('format_version')}, this probing reads "
            f"{FORMAT_VERSION}; re-extract it"
        )
    return meta


class FeatureFile:
    """A complete feature file, opened lazily (safe to pass to DataLoader workers before use).

    Opening checks it (:mod:`probing.features.checks`): no links or virtual sources but a merge's own
    shards, all present; shapes, labels and ``rows_done`` as the metadata says."""

    def __init__(self, path: str | os.PathLike, require_complete: bool = True):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        with h5py.File(self.path, "r") as f:
            missing = check_links(self.path, f, self.meta)
            check_layout(self.path, f, self.meta)
            done, total = int(f["rows_done"][0]), f["hidden"].shape[0]
        if require_complete and not self.meta.get("complete"):
            raise ProbingError(
                f"{self.path} is incomplete ({done} of {total} rows written); finish it with "
                "`probing extract --resume` and the same config, or re-extract with --overwrite"
            )
        if missing:
            raise ProbingError(
                f"{self.path} is a merged file whose shard {missing[0]} is missing (it would read "
                "as zeros); keep shard files beside the merged file or re-extract"
            )
        self._file: h5py.File | None = None
        self._pid: int | None = None

    # -- metadata -----------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return int(self.meta["num_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.meta["hidden_size"])

    @property
    def num_positions(self) -> int:
        return int(self.meta["num_positions"])

    @property
    def label_names(self) -> list[str]:
        return list(self.meta["label_names"])

    @property
    def num_rows(self) -> int:
        return int(self.file["hidden"].shape[0])

    @property
    def source_names(self) -> list[str]:
        """Unique name of each prompt source (``source`` indexes it), e.g. ``malicious+jailbreak``."""
        return source_names(list(self.meta.get("sources") or []))

    @property
    def sources(self) -> np.ndarray:
        """Source index of each row (into :attr:`source_names`)."""
        return self.file["source"][:]

    # -- data ---------------------------------------------------------------------------------
    @property
    def file(self) -> h5py.File:
        """The open h5py handle, reopened after a fork (one handle per process)."""
        if self._file is None or self._pid != os.getpid() or not self._file.id.valid:
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    @property
    def labels(self) -> np.ndarray:
        return self.file["label"][:]

    def column(self, name: str) -> np.ndarray | list[str]:
        """A per-row dataset (`label`, `prompt`, `rendered`, `n_tokens`, ...)."""
        data = self.file[name][:]
        if data.dtype.kind == "O":
            return [x.decode() if isinstance(x, bytes) else x for x in data]
        return data

    def check_layer(self, layer: int, option: str = "layer") -> int:
        if not -self.num_layers <= layer < self.num_layers:
            raise ProbingError(
                f"{option}={layer} is out of range: {self.path} has layers 0..{self.num_layers - 1} "
                "(0 = embeddings)"
            )
        return layer % self.num_layers

    def layer(self, layer: int, position: int = -1, dtype: Any = np.float32) -> np.ndarray:
        """Activations ``[N, D]`` of one layer at one stored position (default the last)."""
        layer = self.check_layer(layer)
        return self.file["hidden"][:, layer, position].astype(dtype, copy=False)

    def layers(
        self, layers: Sequence[int] | None = None, position: int = -1, rows: Any = slice(None)
    ) -> np.ndarray:
        """Activations ``[N, L', D]`` for the chosen layers (all by default), float32."""
        idx = (
            list(range(self.num_layers))
            if layers is None
            else [self.check_layer(i) for i in layers]
        )
        ds = self.file["hidden"]
        out = np.stack([ds[rows, i, position] for i in idx], axis=1)
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        if self._file is not None and self._file.id.valid:
            self._file.close()
        self._file = None

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state
