"""The feature file: HDF5 layout (format constants, per-row table, attributes) and checked reader.

The layout is documented in ``docs/feature-format.md``; :mod:`probing.features.writer` is its only
writer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from probing.errors import ProbingError
from probing.features.atomic import PARTIAL_SUFFIX, being_written, busy_error, partial_path
from probing.features.checks import check_layout, check_links
from probing.features.positions import resolve_position
from probing.layers import LayerSpec, resolve_layer, resolve_layers
from probing.prompts.sources import source_names

FORMAT = "probing-features"
FORMAT_VERSION = 1
JSON_ATTRS = (
    "label_names", "sources", "skipped", "config", "shards", "position_names", "position_offsets",
)  # fmt: skip


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


def encode_attr(key: str, value: Any) -> Any:
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


def looks_like_hdf5(path: Path) -> bool:
    """An HDF5 file, perhaps a damaged one (its signature at the start), not some other file."""
    with path.open("rb") as f:
        return f.read(4) == b"\x89HDF" or h5py.is_hdf5(path)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of a feature file, without checking that it is complete."""
    path = Path(path)
    if not path.exists():
        if partial_path(path).exists():
            if being_written(path):
                raise busy_error(path, reading=True)
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
        # only an unfinished OUTPUT.partial is open in a writer (a finished file is renamed in place)
        if path.name.endswith(PARTIAL_SUFFIX) and being_written(path):
            raise busy_error(path, reading=True) from None
        if not looks_like_hdf5(path):
            raise ProbingError(
                f"{path} is not a readable HDF5 file (not HDF5 at all); give a feature file "
                "written by `probing extract`"
            ) from None
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
    """A feature file, opened lazily (safe to pass to DataLoader workers before use); the only reader
    of its HDF5 layout (``hidden [N, L, P, D]``, ``lens_ids``/``lens_logits [N, L, P, K]``, per-row
    datasets): everything else reads through the methods below.

    Opening checks it (:mod:`probing.features.checks`): no links or virtual sources but a merge's own
    shards, all present; shapes, labels and ``rows_done`` as the metadata says. With
    ``require_complete=False`` an interrupted or partly merged file opens too (``probing info``):
    :attr:`rows_done` and :attr:`missing_shards` say how far it got."""

    def __init__(self, path: str | os.PathLike, require_complete: bool = True):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        with h5py.File(self.path, "r") as f:
            self.missing_shards = check_links(self.path, f, self.meta)
            check_layout(self.path, f, self.meta)
            done, total = int(f["rows_done"][0]), f["hidden"].shape[0]
        if require_complete and not self.meta.get("complete"):
            raise ProbingError(
                f"{self.path} is incomplete ({done} of {total} rows written); finish it with "
                "`probing extract --resume` and the same config, or re-extract with --overwrite"
            )
        if require_complete and self.missing_shards:
            raise ProbingError(
                f"{self.path} is a merged file whose shard {self.missing_shards[0]} is missing (it "
                "would read as zeros); keep shard files beside the merged file or re-extract"
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
        return int(self._h5["hidden"].shape[0])

    @property
    def rows_done(self) -> int:
        """Rows written so far (all of them in a complete file)."""
        return int(self._h5["rows_done"][0])

    @property
    def chunk_rows(self) -> int:
        """Rows per HDF5 chunk of the states: a streaming reader reads whole chunks."""
        chunks = self._h5["hidden"].chunks
        return int(chunks[0]) if chunks else 256

    @property
    def source_names(self) -> list[str]:
        """Unique name of each prompt source (``source`` indexes it), e.g. ``malicious+jailbreak``."""
        return source_names(list(self.meta.get("sources") or []))

    @property
    def sources(self) -> np.ndarray:
        """Source index of each row (into :attr:`source_names`)."""
        return self._h5["source"][:]

    def check_layout(self) -> None:
        """Check the open file's shapes, labels and ``rows_done`` against its metadata again."""
        check_layout(self.path, self._h5, self.meta)

    # -- data ---------------------------------------------------------------------------------
    @property
    def _h5(self) -> h5py.File:
        """The open h5py handle, reopened after a fork (one handle per process)."""
        if self._file is None or self._pid != os.getpid() or not self._file.id.valid:
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    @property
    def labels(self) -> np.ndarray:
        return self._h5["label"][:]

    def names(self) -> list[str]:
        """The file's datasets, in file order (``hidden``, ``label``, ``label_<set>``, ...)."""
        return [n for n in self._h5 if isinstance(self._h5[n], h5py.Dataset)]

    def attrs_of(self, name: str) -> dict[str, Any]:
        """The attributes of a per-row dataset (e.g. a label set's ``names``)."""
        return dict(self._h5[name].attrs)

    def column(self, name: str) -> np.ndarray | list[str]:
        """A per-row dataset (`label`, `prompt`, `rendered`, `n_tokens`, ...)."""
        data = self._h5[name][:]
        if data.dtype.kind == "O":
            return [x.decode() if isinstance(x, bytes) else x for x in data]
        return data

    def states(
        self, rows: Any = slice(None), layers: LayerSpec | None = None, position: int = -1
    ) -> np.ndarray:
        """Stored activations ``[rows, L', D]`` (storage dtype) of ``layers`` (default all) at one
        stored position; ``rows`` a slice, an index or increasing row indices. One read per layer:
        a chunk holds a single layer."""
        ds = self._h5["hidden"]
        idx = resolve_layers(layers, self.num_layers, "layers", str(self.path))
        return np.stack([ds[rows, i, position] for i in idx], axis=-2)

    def layer(self, layer: int, position: int = -1, dtype: Any = np.float32) -> np.ndarray:
        """Activations ``[N, D]`` of one layer at one stored position (default the last)."""
        layer = resolve_layer(layer, self.num_layers, "layer", str(self.path))
        return self._h5["hidden"][:, layer, position].astype(dtype, copy=False)

    def layers(
        self, layers: Sequence[int] | None = None, position: int = -1, rows: Any = slice(None)
    ) -> np.ndarray:
        """Activations ``[N, L', D]`` for the chosen layers (all by default), float32."""
        return self.states(rows, layers, position).astype(np.float32, copy=False)

    def blocks(
        self,
        rows: np.ndarray,
        layers: LayerSpec | None = None,
        position: int = -1,
        block: int | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream the states of ``rows`` (increasing file rows) a block of ``block`` file rows
        (default: one chunk) at a time: ``(the block's rows, their states [n, L', D])``."""
        rows, size, n = np.asarray(rows), block or self.chunk_rows, self.num_rows
        for lo in range(0, n, size):
            take = rows[(rows >= lo) & (rows < lo + size)]
            if len(take):
                yield take, self.states(slice(lo, min(lo + size, n)), layers, position)[take - lo]

    def lens_position(self, position: int | str = -1) -> int:
        """The stored index of ``position`` in a file that holds logit-lens data (an error
        otherwise); reads metadata and shapes only."""
        k = int(self.meta.get("lens_top_k") or 0)
        f = self._h5
        missing = [name for name in ("lens_ids", "lens_logits") if name not in f]
        if k <= 0 or missing or f["lens_ids"].shape[-1] == 0:
            found = f"datasets {', '.join(missing)} missing" if missing else f"lens_top_k={k}"
            raise ProbingError(
                f"{self.path} holds no logit-lens data ({found}); re-extract with --lens_top_k 5 "
                "(or more)"
            )
        return resolve_position(self.meta, position, "--position", self.path)

    def lens(self, position: int | str = -1) -> tuple[np.ndarray, np.ndarray]:
        """Logit-lens ids and logits ``[N, L, K]`` at one stored position (an index or a name the
        file records); an error if the file holds no lens."""
        p = self.lens_position(position)
        return self._h5["lens_ids"][:, :, p, :], self._h5["lens_logits"][:, :, p, :]

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
