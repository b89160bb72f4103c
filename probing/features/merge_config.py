"""`probing merge SHARD... --output FILE`: its options (light: answers ``--help`` without h5py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from probing.config import parse_config

DESCRIPTION = (
    "Merge the shard files of one sharded extraction (checked for agreement) into one feature file "
    "whose virtual datasets read them in single-process row order."
)


@dataclass
class MergeConfig:
    """Merge the shards of a sharded extraction.

    Args:
        shards: all shard files; may be given without ``--shards``.
        output: merged feature file to write.
        overwrite: replace an existing ``--output`` (else refused, unless it is this very merge).
    """

    shards: list[str]
    output: str
    overwrite: bool = False


def parse(argv: Sequence[str]) -> MergeConfig:
    return parse_config(MergeConfig, argv, "probing merge", DESCRIPTION, positional=("shards",))
