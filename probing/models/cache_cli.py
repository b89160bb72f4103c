"""`probing cache [--clear true]`: list the converted models in the model cache, or remove them."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from probing.config import parse_config
from probing.models import cache


@dataclass
class CacheConfig:
    """List or clear the converted GGUF models in the model cache.

    Args:
        clear: remove every converted model (each is converted again, once, on its next load).
    """

    clear: bool = False


def parse(argv: list[str]) -> CacheConfig:
    return parse_config(
        CacheConfig,
        argv,
        "probing cache",
        "List the GGUF models converted into the model cache ($PROBING_CACHE, else "
        "~/.cache/probing/models), or remove them with --clear true.",
    )


def format_entries(entries: list[cache.Entry]) -> str:
    root = cache.converted_dir()
    if not entries:
        return f"no converted models in {root}"
    lines = [f"{root}:"]
    for e in entries:
        state = "ok" if e.valid else "broken or stale (rebuilt on next load)"
        lines.append(f"  {e.path.name}  {e.size / 2**20:.0f} MiB  {e.gguf_file or '?'}  {state}")
    total = sum(e.size for e in entries)
    lines.append(f"{len(entries)} entries, {total / 2**20:.0f} MiB")
    return "\n".join(lines)


def run(argv: list[str]) -> int:
    cfg = parse(argv)
    if cfg.clear:
        freed = cache.clear()
        sys.stdout.write(f"removed {freed / 2**20:.0f} MiB from {cache.converted_dir()}\n")
    else:
        sys.stdout.write(format_entries(cache.entries()) + "\n")
    return 0
