"""A model's context length, known without loading its weights (the default ``--max_tokens``)."""

from __future__ import annotations

import os
import struct
from typing import Any, BinaryIO

from probing.models.load import ModelConfig, ModelSource, pretrained_kwargs, resolve_model

# GGUF value types: fixed-size scalars (struct format), 8 = string, 9 = array
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


def config_context_length(config: Any) -> int | None:
    """``max_position_embeddings`` (or ``n_positions``) of a transformers config, text part first."""
    if config is None:
        return None
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and 0 < value < 10**7:
            return value
    return None


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise EOFError
    return struct.unpack("<" + fmt, data)[0]


def _string(f: BinaryIO) -> bytes:
    n = _read(f, "Q")
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _skip(f: BinaryIO, vtype: int) -> None:
    if vtype in _SCALARS:
        f.seek(struct.calcsize("<" + _SCALARS[vtype]), os.SEEK_CUR)
    elif vtype == _STRING:
        f.seek(_read(f, "Q"), os.SEEK_CUR)
    elif vtype == _ARRAY:
        item, count = _read(f, "I"), _read(f, "Q")
        if item in _SCALARS:
            f.seek(count * struct.calcsize("<" + _SCALARS[item]), os.SEEK_CUR)
        else:
            for _ in range(count):
                _skip(f, item)
    else:
        raise ValueError(f"unknown GGUF value type {vtype}")


def gguf_context_length(path: str | os.PathLike) -> int | None:
    """``{architecture}.context_length`` from a GGUF file's header (reads only the key-value part).

    ``None`` when the file is not a little-endian GGUF v2/v3 or has no such key.
    """
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF" or _read(f, "I") not in (2, 3):
                return None
            _read(f, "Q")  # tensor count
            arch, n_kv = None, _read(f, "Q")
            for _ in range(n_kv):
                key, vtype = _string(f).decode("utf-8", "replace"), _read(f, "I")
                if key == "general.architecture" and vtype == _STRING:
                    arch = _string(f).decode("utf-8", "replace")
                elif arch and key == f"{arch}.context_length" and vtype in _SCALARS:
                    value = _read(f, _SCALARS[vtype])
                    return int(value) if isinstance(value, int) and value > 0 else None
                else:
                    _skip(f, vtype)
    except (OSError, EOFError, ValueError, struct.error):
        return None
    return None


def model_context_length(model: ModelConfig | ModelSource) -> int | None:
    """The context length of the model ``model`` names, from its GGUF header or config file."""
    source = resolve_model(model)
    if source.gguf_path is not None:
        return gguf_context_length(source.gguf_path)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            source.where, **pretrained_kwargs(source.config, source.gguf)
        )
    except (OSError, ValueError) as err:
        raise source.load_error(err) from None
    return config_context_length(config)
