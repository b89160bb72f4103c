"""`probing merge SHARD... --output FILE`: one feature file over all shards of a sharded extraction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from probing.config import parse_config
from probing.features.shards import merge_shards

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


def merge(cfg: MergeConfig) -> Path:
    """Write the merged file; returns its path."""
    return merge_shards(cfg.shards, cfg.output, overwrite=cfg.overwrite)


def parse(argv: list[str]) -> MergeConfig:
    return parse_config(MergeConfig, argv, "probing merge", DESCRIPTION, positional=("shards",))


def run(argv: list[str]) -> int:
    merge(parse(argv))
    return 0
