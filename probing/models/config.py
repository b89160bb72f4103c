"""Which model to load and how: the options of every command that loads a model (no torch here, so
that ``--help`` stays fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Dtype = Literal["float32", "bfloat16", "float16"]
DTYPE_NAMES = get_args(Dtype)  # the compute dtypes a model loads in
DtypeOption = Literal["auto", "float32", "bfloat16", "float16"]  # auto: probing.models.precision


@dataclass
class ModelConfig:
    """Which model to load and how.

    Args:
        name: a built-in name (``smollm2-135m-instruct``), a hub id, a local model folder, or a
            path to a ``.gguf`` file.
        gguf_file: GGUF file name inside the hub repo or folder given by ``name``.
        revision: hub branch, tag or commit.
        dtype: compute dtype; ``auto``: bfloat16 where the hardware computes it natively (a GPU
            that supports it; a CPU with AVX512-BF16 or AMX), float32 elsewhere (logged; files record
            the dtype chosen).
        device: ``cpu``, ``cuda`` or ``cuda:N`` (ignored when ``device_map`` is set).
        device_map: e.g. ``auto`` to spread a large model over GPUs and CPU (needs accelerate).
        trust_remote_code: allow model code from the hub repo.
    """

    name: str = "smollm2-135m-instruct"
    gguf_file: str | None = None
    revision: str | None = None
    dtype: DtypeOption = "float32"
    device: str = "cpu"
    device_map: str | None = None
    trust_remote_code: bool = False


@dataclass
class ModelOverride:
    """How to load the model a feature file or probe came from; anything not given is as recorded.

    Args:
        name: load the model from here instead of the recorded ``model`` (a built-in name, hub id,
            folder or ``.gguf`` file holding the same weights: it is checked).
        device: ``cpu``, ``cuda`` or ``cuda:N`` (default: the one recorded at extraction).
        dtype: compute dtype (default: the extraction's; ``auto`` as in ``ModelConfig``).
        trust_remote_code: allow model code from the hub repo. Only ever from here (the command line
            or its config), never from a file's metadata.
    """

    name: str | None = None
    device: str | None = None
    dtype: DtypeOption | None = None
    trust_remote_code: bool = False
