"""`probing merge SHARD... --output FILE`: one feature file over all shards of a sharded extraction."""

from __future__ import annotations

from jsonargparse import ArgumentParser

from probing.features.shards import merge_shards


def run(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="probing merge",
        description="Merge the shard files of one sharded extraction (checked for agreement) into one "
        "feature file whose virtual datasets read them in single-process row order.",
    )
    parser.add_argument("shards", type=str, nargs="+", help="all shard files")
    parser.add_argument("--output", type=str, required=True, help="merged feature file to write")
    parser.add_argument(
        "--overwrite",
        type=bool,
        default=False,
        nargs="?",
        const=True,
        help="replace an existing --output (else refused, unless it is this very merge)",
    )
    args = parser.parse_args(argv)
    merge_shards(args.shards, args.output, overwrite=args.overwrite)
    return 0
