"""The feature file's writers: a new file's layout, rows streamed in batches, atomic completion; and
the merged file of a sharded extraction (virtual datasets over its shards).

Rows go to ``OUTPUT.partial`` under ``OUTPUT.lock`` (:mod:`probing.features.atomic`); a failed write
(a full disk) removes the unfinished file and says why; the layout is in ``docs/feature-format.md``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from probing.errors import ProbingError
from probing.features.atomic import (
    WriteLock,
    discard_partial,
    final_path,
    fsync_path,
    partial_path,
    write_error,
)
from probing.features.store import FORMAT, FORMAT_VERSION, RowTable, decode_attrs, encode_attr

FP16_MAX = 65504.0
CHUNK_BYTES = 512 * 1024
_STR = h5py.string_dtype("utf-8")


def _chunk_rows(per_row_bytes: int, n_rows: int) -> int:
    return int(max(1, min(max(n_rows, 1), CHUNK_BYTES // max(per_row_bytes, 1))))


def _layout(
    file: h5py.File,
    meta: dict[str, Any],
    rows: RowTable,
    num_layers: int,
    num_positions: int,
    hidden_size: int,
    top_k: int,
    storage_dtype: str,
) -> None:
    """The datasets and attributes of a new, empty feature file (rows are written later)."""
    n = len(rows)
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
        file.attrs[key] = encode_attr(key, value)
    file.flush()


def _open_partial(path: Path, mode: str, lock: WriteLock, message: str) -> h5py.File:
    """Open ``path.partial`` in ``mode``; on failure release ``lock`` and raise ``message`` (its
    ``{path}``, ``{partial}`` and ``{err}`` filled in)."""
    try:
        return h5py.File(partial_path(path), mode)
    except OSError as err:
        lock.release()
        raise ProbingError(
            message.format(path=path, partial=partial_path(path), err=err.strerror or err)
        ) from None


class FeatureWriter:
    """Appends batches of rows to a feature file; marks it complete only in :meth:`finish`.

    Rows go to ``OUTPUT.partial`` under an exclusive ``OUTPUT.lock`` (see :mod:`probing.features.atomic`);
    :meth:`finish` renames the complete file to ``OUTPUT``, so a finished file is never half-written.
    """

    def __init__(self, file: h5py.File, path: Path | None = None, lock: WriteLock | None = None):
        self.file = file
        self.path = final_path(path if path is not None else file.filename)
        self.partial = Path(file.filename)
        self.lock = lock
        self.discarded = False  # a failed write removed the file (see _failed)
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
        file = _open_partial(
            path, "w", lock, "cannot write the feature file {path}: {err}; choose a writable "
            "location with --output",
        )  # fmt: skip
        try:
            _layout(file, meta, rows, num_layers, num_positions, hidden_size, top_k, storage_dtype)
        except (OSError, RuntimeError) as err:  # h5py raises both for a failed write (disk full)
            discard_partial(file, partial_path(path), lock)
            raise write_error(path, err, 0, n) from None
        return cls(file, path, lock)

    @classmethod
    def reopen(cls, path: str | os.PathLike, lock: WriteLock | None = None) -> FeatureWriter:
        """Open the incomplete ``path.partial`` to continue writing after its last flushed row."""
        path = Path(path)
        lock = lock if lock is not None else WriteLock(path).acquire()
        file = _open_partial(
            path,
            "r+",
            lock,
            "cannot reopen {partial} to resume ({err}); start over with --overwrite",
        )
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
        try:
            self.hidden[start:stop] = hidden.astype(self.storage_dtype, copy=False)
            self.lens_ids[start:stop] = lens_ids
            self.lens_logits[start:stop] = lens_logits
            self.file.flush()
            self._rows_done[0] = stop
            self.file.flush()
        except (OSError, RuntimeError) as err:  # h5py raises both for a failed write (disk full)
            raise self._failed(err, start) from None

    def set_attr(self, key: str, value: Any) -> None:
        self.file.attrs[key] = encode_attr(key, value)

    def finish(self) -> None:
        """Mark the file complete and move it into place; only call after every row is written."""
        if self.rows_done != self.num_rows:
            raise ValueError(f"finish() with {self.rows_done} of {self.num_rows} rows written")
        try:
            self.file.attrs["complete"] = True
            self.file.flush()
            self.file.close()
            if self.partial != self.path:
                fsync_path(self.partial)
        except (OSError, RuntimeError) as err:
            raise self._failed(err, self.num_rows) from None
        if self.partial != self.path:
            os.replace(self.partial, self.path)
        self.close()

    def _failed(self, err: BaseException, done: int) -> ProbingError:
        """Remove the unfinished file after a failed write (it may be damaged) and say why."""
        total = self.num_rows
        discard_partial(self.file, self.partial, self.lock)
        self.discarded = True
        return write_error(self.path, err, done, total)

    def close(self) -> None:
        """Close the file and release the lock (an unfinished file stays in ``OUTPUT.partial``)."""
        if not self.discarded and self.file.id.valid:
            self.file.close()
        if self.lock is not None:
            self.lock.release()


# -- the merged file of a sharded extraction (probing merge; features/shards.py checks the shards) ---
VIRTUAL = ("hidden", "lens_ids", "lens_logits")  # stay in the shard files, mapped in row order
SHARD_ATTRS = ("shard_index", "shard_count", "shard_start", "total_rows", "fingerprint", "complete")


def write_merged(tmp: Path, paths: list[Path], metas: list[dict], output: Path) -> None:
    """Write the merged file of ``paths`` (checked shards, in shard order) at ``tmp``, to be renamed to
    ``output``: virtual datasets over the shards (paths relative to ``output``'s folder), the other
    columns concatenated, the attributes; ``complete`` last. A failed write removes ``tmp``."""
    out = h5py.File(tmp, "w")
    try:
        _fill_merged(out, paths, metas, output)
    except BaseException:
        discard_partial(out, tmp, None)
        raise


def _fill_merged(out: h5py.File, paths: list[Path], metas: list[dict], output: Path) -> None:
    """The merged file's datasets (virtual ones over ``paths``, in shard order) and attributes."""
    total = metas[0]["total_rows"]
    with out, h5py.File(paths[0], "r") as f0:
        for name in VIRTUAL:
            ds = f0[name]
            layout = h5py.VirtualLayout(shape=(total, *ds.shape[1:]), dtype=ds.dtype)
            for p, m in zip(paths, metas):
                with h5py.File(p, "r") as f:
                    rows = f[name].shape[0]
                start = m["shard_start"]
                rel = os.path.relpath(p.resolve(), output.resolve().parent)
                layout[start : start + rows] = h5py.VirtualSource(
                    rel, name, shape=(rows, *ds.shape[1:])
                )
            out.create_virtual_dataset(name, layout)
        for name in f0:
            if name in VIRTUAL or name == "rows_done":
                continue
            parts = []
            for p in paths:
                with h5py.File(p, "r") as f:
                    parts.append(f[name][:])
            out.create_dataset(name, data=np.concatenate(parts), dtype=f0[name].dtype)
        out.create_dataset("rows_done", data=np.array([total], dtype=np.int64))
        attrs = {k: v for k, v in decode_attrs(f0.attrs).items() if k not in SHARD_ATTRS}
        attrs["fingerprint"] = metas[0]["plan_fingerprint"]
        attrs["shards"] = [os.path.relpath(p.resolve(), output.resolve().parent) for p in paths]
        attrs["skipped"] = metas[0].get("skipped", {})
        for key, value in attrs.items():
            out.attrs[key] = encode_attr(key, value)
        if out["label"].shape[0] != total:
            raise ProbingError(f"shards hold {out['label'].shape[0]} rows, expected {total}")
        out.attrs["complete"] = True
