"""Sharded extraction (torchrun ranks or ``--shard i/n``) and merging shards through HDF5 virtual datasets.

A plan's rows (length-sorted, as in a single-process run) are cut into ``n`` contiguous slices holding
about the same number of tokens; shard ``i`` extracts slice ``i`` into its own file. The merged file maps
the slices back in order, so its rows are those of a single-process run. Its activations stay in the
shard files (virtual datasets with paths relative to the merged file): keep them beside it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from probing.errors import ProbingError
from probing.features.atomic import failure_reason
from probing.features.merge_config import MergeConfig
from probing.features.store import FORMAT, read_meta
from probing.features.writer import write_merged

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 <= i < n."""
    m = _SHARD.match(spec)
    if not m or not 0 <= int(m[1]) < int(m[2]):
        raise ProbingError(f"--shard {spec!r}: expected i/n with 0 <= i < n, e.g. --shard 0/4")
    return int(m[1]), int(m[2])


def shard_from_env() -> tuple[int, int] | None:
    """(rank, world size) under torchrun/SLURM-style launchers, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return int(os.environ.get("RANK", "0")), world
    return None


def shard_path(output: str | Path, index: int, count: int) -> Path:
    output = Path(output)
    return output.with_name(
        f"{output.stem}.shard{index:03d}-of-{count:03d}{output.suffix or '.h5'}"
    )


def shard_bounds(n_tokens: np.ndarray, count: int) -> list[tuple[int, int]]:
    """``count`` contiguous [start, stop) slices with about equal token totals (none empty if possible)."""
    n = len(n_tokens)
    if count > n:
        raise ProbingError(
            f"{count} shards for {n} prompts: use at most {n} shards (--shard / --nproc_per_node)"
        )
    cum = np.cumsum(n_tokens)
    cuts = [0]
    for k in range(1, count):
        cut = int(np.searchsorted(cum, cum[-1] * k / count))
        cuts.append(min(max(cut, cuts[-1] + 1), n - (count - k)))
    cuts.append(n)
    return list(zip(cuts[:-1], cuts[1:]))


def _check_shards(paths: list[Path]) -> list[dict]:
    if not paths:
        raise ProbingError("no shard files given to merge")
    metas = []
    for p in paths:
        if not p.exists():
            raise ProbingError(
                f"shard {p} does not exist; rerun that shard (same config, --shard i/n)"
            )
        meta = read_meta(p)
        if "shard_index" not in meta:
            raise ProbingError(f"{p} is a feature file but not a shard (no shard_index attribute)")
        if not meta.get("complete"):
            raise ProbingError(f"shard {p} is incomplete; finish it with --resume before merging")
        metas.append(meta)
    first = metas[0]
    for p, m in zip(paths, metas):
        for key in ("plan_fingerprint", "shard_count", "total_rows"):
            if m.get(key) != first.get(key):
                what = "model, prompt set or settings" if key == "plan_fingerprint" else key
                raise ProbingError(
                    f"shards disagree on {what}: {paths[0]} vs {p}; extract all shards with one config"
                )
    count = first["shard_count"]
    indices = sorted(m["shard_index"] for m in metas)
    if len(paths) != count or indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        dupes = sorted({i for i in indices if indices.count(i) > 1})
        raise ProbingError(
            f"expected {count} shards (indices 0..{count - 1}), got {len(paths)} with indices {indices}"
            + (f"; missing {missing}" if missing else "")
            + (f"; duplicates {dupes}" if dupes else "")
        )
    return metas


def merge(cfg: MergeConfig) -> Path:
    """``probing merge``: write the merged file of ``cfg.shards``; returns its path."""
    return merge_shards(cfg.shards, cfg.output, overwrite=cfg.overwrite)


def merge_shards(paths: list[str | Path], output: str | Path, overwrite: bool = False) -> Path:
    """One feature file presenting all shards' rows in single-process order (virtual datasets).

    An existing ``output`` is replaced only with ``overwrite``; a complete merge of the same run
    (same plan fingerprint and shards) is left as it is.
    """
    paths = [Path(p) for p in paths]
    output = Path(output)
    for p in paths:  # the merged file reads its shards: replacing one would lose its rows
        if output.exists() and p.exists() and os.path.samefile(output, p):
            raise ProbingError(
                f"--output {output} is one of the shards to merge ({p}); writing it would replace "
                "that shard's rows: choose another --output"
            )
    metas = _check_shards(paths)
    for p in paths:  # readers resolve shards only inside the merged file's folder
        if os.path.relpath(p.resolve(), output.resolve().parent).startswith(os.pardir):
            raise ProbingError(
                f"shard {p} is not in the folder of --output {output} (or below it); a merged file "
                "reads its shards there: write --output beside the shards"
            )
    if output.exists() and not overwrite:
        try:
            old = read_meta(output)
        except ProbingError:
            old = {}
        rel = sorted(os.path.relpath(p.resolve(), output.resolve().parent) for p in paths)
        if (
            old.get("complete")
            and old.get("fingerprint") == metas[0]["plan_fingerprint"]
            and sorted(old.get("shards") or []) == rel
        ):
            return output
        raise ProbingError(
            f"--output {output} already exists and is not this merge; pass --overwrite to replace "
            "it or choose another --output"
        )
    order = sorted(range(len(paths)), key=lambda i: metas[i]["shard_index"])
    paths = [paths[i] for i in order]
    metas = [metas[i] for i in order]
    tmp = output.with_name(f"{output.name}.merging-{os.getpid()}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_merged(tmp, paths, metas, output)
    except (OSError, RuntimeError) as err:  # h5py raises both for a failed write (disk full)
        raise ProbingError(
            f"cannot write {output}: {failure_reason(err)}; nothing was left behind: free space "
            "there or choose another --output"
        ) from None
    os.replace(tmp, output)
    return output


def all_shards_complete(output: str | Path, count: int) -> list[Path] | None:
    paths = [shard_path(output, i, count) for i in range(count)]
    for p in paths:
        try:
            meta = read_meta(p)
        except ProbingError:
            return None
        if meta.get("format") != FORMAT or not meta.get("complete"):
            return None
    return paths
