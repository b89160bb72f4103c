"""Which model to load and how: the options of every command that loads a model (no torch here, so
that ``--help`` stays fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class ModelConfig:
    """Which model to load and how.

    Args:
        name: a built-in name (``smollm2-135m-instruct``), a hub id, a local model folder, or a
            path to a ``.gguf`` file.
        gguf_file: GGUF file name inside the hub repo or folder given by ``name``.
        revision: hub branch, tag or commit.
        dtype: compute dtype.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (ignored when ``device_map`` is set).
        device_map: e.g. ``auto`` to spread a large model over GPUs and CPU (needs accelerate).
        trust_remote_code: allow model code from the hub repo.
    """

    name: str = "smollm2-135m-instruct"
    gguf_file: str | None = None
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    device_map: str | None = None
    trust_remote_code: bool = False
