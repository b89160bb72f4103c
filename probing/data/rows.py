"""Rows of a feature file as torch datasets (in memory or chunked reads), their batches and moments."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from probing.features.store import FeatureFile

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def available_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


@dataclass
class RowSource:
    """The kept rows of one feature file."""

    ff: FeatureFile
    rows: np.ndarray  # file row index of each kept row
    y: np.ndarray  # class index of each kept row
    source: np.ndarray | None = None  # prompt-source index (into the file's source names) per row
    x: torch.Tensor | None = None  # [kept, L, D] when in memory


class MemoryRows(Dataset):
    """Rows of an in-memory block; ``__getitems__`` slices a whole batch at once."""

    def __init__(self, src: RowSource, pos: np.ndarray):
        self.x, self.pos = src.x, torch.as_tensor(pos)
        self.y = torch.as_tensor(src.y)[self.pos]
        self.rows = torch.as_tensor(src.rows)[self.pos]

    def __len__(self) -> int:
        return len(self.pos)

    def __getitem__(self, i: int) -> Batch:
        return self.__getitems__([i])[0]

    def __getitems__(self, idx: list[int]) -> list[Batch]:
        idx_t = torch.as_tensor(idx)
        return [(self.x[self.pos[idx_t]], self.y[idx_t], self.rows[idx_t])]


class FullBatch(Dataset):
    """One item, the whole training split with the validation rows: ``(x, y, rows, val_x, val_y)``
    (``batch_size: full``; load it with ``DataLoader(..., batch_size=None)``)."""

    def __init__(self, train: MemoryRows, val: MemoryRows):
        self.train, self.val = train, val

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        if i != 0:
            raise IndexError(i)
        train, val = self.train, self.val
        return train.x[train.pos], train.y, train.rows, val.x[val.pos], val.y


class ChunkRows(Dataset):
    """Rows read from HDF5 in whole chunks: item ``i`` is every wanted row of file chunk ``i``."""

    def __init__(
        self, src: RowSource, pos: np.ndarray, layers: list[int], position: int, stats: Any
    ):
        self.ff, self.layers, self.position = src.ff, layers, position
        self.mean, self.std = stats if stats is not None else (None, None)
        rows, y = src.rows[pos], src.y[pos]
        chunk = src.ff.chunk_rows
        block = rows // chunk
        self.blocks = []
        for b in np.unique(block):
            sel = block == b
            self.blocks.append(
                (int(b) * chunk, int(min((b + 1) * chunk, src.ff.num_rows)), rows[sel], y[sel])
            )
        src.ff.close()  # reopened lazily in each process

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> Batch:
        start, stop, rows, y = self.blocks[i]
        x = self.ff.states(slice(start, stop), self.layers, self.position)
        x = x[rows - start].astype(np.float32)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(rows)


def read_rows(
    src: RowSource, pos: np.ndarray, layers: list[int], position: int, stats: Any,
    source_names: list[str],
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:  # fmt: skip
    """``(x [n, L, D] standardised, y [n], source name per row)`` of the kept rows ``pos`` of
    ``src``: from memory, else read in whole chunks (rows then in chunk order)."""
    if src.x is None:
        ds = ChunkRows(src, pos, layers, position, stats)
        x = torch.cat([ds[i][0] for i in range(len(ds))]) if len(ds) else torch.zeros(0)
        order = np.concatenate([b[2] for b in ds.blocks]) if ds.blocks else np.zeros(0, int)
        pos = np.searchsorted(src.rows, order)
    else:
        x = src.x[torch.as_tensor(pos)]
    source = np.asarray([source_names[int(i)] for i in src.source[pos]], dtype=object)
    return x, src.y[pos], source


def cat_batches(parts: list[Batch]) -> Batch:
    """Collate: concatenate ``(x, y, rows)`` parts into one batch."""
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(t) for t in zip(*parts, strict=False))  # type: ignore[return-value]


def moments(
    x: torch.Tensor, rows: np.ndarray, chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std ``[L, D]`` over ``rows`` of ``x [N, L, D]`` in float64, without copying the block."""
    rows_t = torch.as_tensor(rows)
    total = torch.zeros(x.shape[1:], dtype=torch.float64)
    sq = torch.zeros_like(total)
    for start in range(0, len(rows_t), chunk):
        part = x[rows_t[start : start + chunk]].double()
        total += part.sum(0)
        sq += (part * part).sum(0)
    n = max(len(rows_t), 1)
    mean = total / n
    var = (sq / n - mean * mean).clamp_min(0)
    std = var.sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean.float(), std.float()


def describe_rows(
    src: RowSource,
    split_pos: dict[str, np.ndarray | None],
    class_names: list[str],
    rows: np.ndarray,
) -> dict[str, list]:
    """``prompt_index``, ``split`` and class name of file rows of ``src``; ``split_pos``: the kept
    rows' positions per split (``{"transfer": None}``: every row is of that split)."""
    pos_of_row = {int(r): i for i, r in enumerate(src.rows)}
    split_of_pos = np.full(len(src.rows), "", dtype=object)
    for name, pos in split_pos.items():
        split_of_pos[slice(None) if pos is None else pos] = name
    prompt_index = FeatureFile(src.ff.path).column("prompt_index")
    pos = [pos_of_row[int(r)] for r in rows]
    return {
        "prompt_index": [int(prompt_index[int(r)]) for r in rows],
        "split": [split_of_pos[p] for p in pos],
        "label": [class_names[int(src.y[p])] for p in pos],
    }
