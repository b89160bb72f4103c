"""`probing cache [--clear true]`: its options (the work: :func:`probing.models.cache.manage`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from probing.config import parse_config


@dataclass
class CacheConfig:
    """List or clear the converted GGUF models in the model cache.

    Args:
        clear: remove every converted model (each is converted again, once, on its next load).
    """

    clear: bool = False


def parse(argv: Sequence[str]) -> CacheConfig:
    return parse_config(
        CacheConfig,
        argv,
        "probing cache",
        "List the GGUF models converted into the model cache ($PROBING_CACHE, else "
        "~/.cache/probing/models), or remove them with --clear true.",
    )
