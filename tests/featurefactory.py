"""Synthetic, complete feature files for tests and benchmarks (written with ``FeatureWriter``).

Class ``c`` at layer ``l`` is ``separability[l] * mu[l, c] + noise`` with unit-norm random class
directions ``mu`` and standard normal noise, so per-layer accuracy is controlled by ``separability``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from probing.features.store import RowTable
from probing.features.writer import FeatureWriter

BASE_META = {
    "probing_version": "test",
    "model": "synthetic-model",
    "model_source": "builtin",
    "model_revision": "",
    "gguf_sha256": "",
    "architecture": "llama",
    "dtype": "float32",
    "num_decoder_layers": 0,
    "vocab_size": 32,
    "template": "chat",
    "system_prompt": "",
    "positions": "last",
    "sources": ["synthetic"],
    "prompt_hash": "0" * 64,
    "fingerprint": "0" * 64,
    "skipped": {},
    "config": {},
    "created": "2024-01-01T00:00:00",
}


def synthetic_arrays(
    n: int,
    num_layers: int,
    hidden_size: int,
    num_classes: int = 2,
    separability: Sequence[float] | float | None = None,
    seed: int = 0,
    labels: np.ndarray | None = None,
    dtype: Any = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """``hidden [N, L, D]`` and ``label [N]`` (balanced classes unless ``labels`` is given)."""
    rng = np.random.default_rng(seed)
    if separability is None:
        separability = np.linspace(0.5, 4.0, num_layers)
    sep = np.broadcast_to(np.asarray(separability, dtype=np.float32), (num_layers,))
    y = np.arange(n) % num_classes if labels is None else np.asarray(labels)
    if labels is None:
        y = rng.permutation(y)
    mu = rng.standard_normal((num_layers, num_classes, hidden_size)).astype(np.float32)
    mu /= np.linalg.norm(mu, axis=-1, keepdims=True)
    x = np.empty((n, num_layers, hidden_size), dtype=dtype)
    for start in range(0, n, 512):
        yy = y[start : start + 512]
        noise = rng.standard_normal((len(yy), num_layers, hidden_size), dtype=np.float32)
        x[start : start + 512] = noise + sep[None, :, None] * mu[:, yy].transpose(1, 0, 2)
    return x, y.astype(np.int64)


def make_feature_file(
    path: str | os.PathLike,
    n: int = 200,
    num_layers: int = 5,
    hidden_size: int = 16,
    label_names: Sequence[str] = ("normal", "malicious"),
    separability: Sequence[float] | float | None = None,
    seed: int = 0,
    labels: np.ndarray | None = None,
    hidden: np.ndarray | None = None,
    num_positions: int = 1,
    storage_dtype: str = "float32",
    complete: bool = True,
    meta: dict[str, Any] | None = None,
    batch: int = 256,
    sources: np.ndarray | None = None,
    prompts: Sequence[str] | None = None,
) -> Path:
    """Write a feature file; ``hidden`` ``[N, L, D]`` (or ``[N, L, P, D]``) overrides the synthetic data;
    ``sources`` gives each row's source index (into ``meta["sources"]``); ``prompts`` each row's text
    (default ``prompt i``)."""
    path = Path(path)
    if hidden is None:
        hidden, labels = synthetic_arrays(
            n, num_layers, hidden_size, len(label_names), separability, seed, labels
        )
    elif labels is None:
        raise ValueError("give labels with hidden")
    if hidden.ndim == 3:
        hidden = np.repeat(hidden[:, :, None], num_positions, axis=2)
    n, num_layers, num_positions, hidden_size = hidden.shape
    rows = RowTable(
        prompt=list(prompts) if prompts is not None else [f"prompt {i}" for i in range(n)],
        rendered=[f"<user>prompt {i}</user>" for i in range(n)],
        label=np.asarray(labels, dtype=np.int64),
        prompt_index=np.arange(n, dtype=np.int64)[::-1].copy(),
        source=np.zeros(n, dtype=np.int64) if sources is None else np.asarray(sources, np.int64),
        n_tokens=np.full(n, 5, dtype=np.int64),
    )
    full_meta = {
        **BASE_META,
        "num_decoder_layers": num_layers - 1,
        "label_names": list(label_names),
        "storage_dtype": storage_dtype,
        **(meta or {}),
    }
    writer = FeatureWriter.create(
        path, full_meta, rows, num_layers=num_layers, num_positions=num_positions,
        hidden_size=hidden_size, top_k=1, storage_dtype=storage_dtype,
    )  # fmt: skip
    stop = n if complete else n // 2
    for start in range(0, stop, batch):
        end = min(start + batch, stop)
        b = end - start
        lens_shape = (b, num_layers, num_positions, 1)
        writer.write(
            hidden[start:end], np.zeros(lens_shape, np.int32), np.zeros(lens_shape, np.float32)
        )
    if complete:
        writer.finish()
    else:
        writer.close()
    return path


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models train far faster on one intra-op thread (and the CI machine has two cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_shards(
    output: str | os.PathLike,
    n: int = 40,
    count: int = 2,
    num_layers: int = 3,
    hidden_size: int = 8,
) -> list[Path]:
    """The ``count`` complete shard files of one sharded extraction of ``output`` (``probing merge``'s
    input), rows cut into equal contiguous slices."""
    from probing.features.shards import shard_path

    hidden, labels = synthetic_arrays(n, num_layers, hidden_size, seed=1)
    bounds = np.linspace(0, n, count + 1).astype(int)
    paths = []
    for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        meta = {"shard_index": i, "shard_count": count, "shard_start": int(start),
                "total_rows": n, "plan_fingerprint": "a" * 64}  # fmt: skip
        path = shard_path(output, i, count)
        paths.append(make_feature_file(path, hidden=hidden[start:stop], labels=labels[start:stop],
                                       meta=meta))  # fmt: skip
    return paths
