"""`probing info FILE [--json]`: what a feature file holds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from probing.features.atomic import being_written, partial_path
from probing.features.info_config import InfoConfig
from probing.features.positions import position_names
from probing.features.store import FeatureFile
from probing.prompts.sources import source_names


def summarize(path: str | Path) -> dict[str, Any]:
    """Summary of a feature file (complete or not) as plain JSON-able values."""
    path = Path(path)
    if not path.exists() and partial_path(path).exists() and not being_written(path):
        path = partial_path(path)  # an interrupted extraction: show how far it got
    with FeatureFile(path, require_complete=False) as ff:
        meta = ff.meta
        # a merged file reads a missing shard's rows as zeros: it is not complete without them
        missing = ff.missing_shards
        labels = ff.labels
        row_sources = ff.sources if "source" in ff.names() else np.zeros(len(labels), np.int64)
        rows_done, num_rows = ff.rows_done, ff.num_rows
    names = meta["label_names"]
    counts = Counter(int(x) for x in labels)
    return {
        "path": str(path),
        "complete": bool(meta.get("complete")) and not missing,
        "missing_shards": missing,
        "rows": num_rows,
        "rows_done": rows_done,
        "layers": int(meta["num_layers"]),
        "decoder_layers": int(meta["num_decoder_layers"]),
        "hidden_size": int(meta["hidden_size"]),
        "positions": meta["positions"],
        "num_positions": int(meta["num_positions"]),
        "position_names": position_names(meta),
        "labels": {name: counts.get(i, 0) for i, name in enumerate(names)},
        "sources": _sources(meta, row_sources, labels),
        "model": meta["model"],
        "model_source": meta.get("model_source", ""),
        "architecture": meta.get("architecture", ""),
        "dtype": meta.get("dtype", ""),
        "storage_dtype": meta["storage_dtype"],
        "template": meta.get("template", ""),
        "lens_top_k": int(meta["lens_top_k"]),
        "skipped": meta.get("skipped", {}),
        "prompt_hash": meta.get("prompt_hash", ""),
        "gguf_sha256": meta.get("gguf_sha256", ""),
        "probing_version": meta.get("probing_version", ""),
        "created": meta.get("created", ""),
        "size_bytes": path.stat().st_size,
    }


def _sources(meta: dict[str, Any], row_sources: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Rows and label of each prompt source, by the name `--data.holdout_sources` and `generalize` use."""
    names = source_names(list(meta.get("sources") or []))
    out = {}
    for i, name in enumerate(names):
        sel = row_sources == i
        found = sorted({meta["label_names"][int(x)] for x in labels[sel]})
        out[name] = {"rows": int(sel.sum()), "label": "/".join(found) or "-"}
    return out


def format_summary(s: dict[str, Any]) -> str:
    if s["complete"]:
        state = "complete"
    elif s.get("missing_shards"):
        state = (
            f"INCOMPLETE (merged file; shard(s) {', '.join(s['missing_shards'])} missing: their "
            "rows would read as zeros; keep the shards beside the merged file or re-extract)"
        )
    else:
        state = f"INCOMPLETE ({s['rows_done']} of {s['rows']} rows written)"
    labels = ", ".join(f"{k} {v}" for k, v in s["labels"].items())
    sources = ", ".join(f"{k} {v['rows']} ({v['label']})" for k, v in s["sources"].items())
    lines = [
        f"{s['path']}: {state}",
        f"  model      {s['model']} ({s['architecture']}, {s['dtype']}, {s['model_source']})",
        f"  rows       {s['rows']}  [{labels}]",
        f"  sources    {sources}",
        f"  layers     {s['layers']} (0 = embeddings, 1..{s['decoder_layers']} = decoder blocks)",
        f"  hidden     {s['hidden_size']} × {s['num_positions']} position(s) '{s['positions']}' ({', '.join(s['position_names'])}), stored {s['storage_dtype']}",
        f"  template   {s['template']}; "
        + (f"lens top-{s['lens_top_k']}" if s["lens_top_k"] else "no lens (--lens_top_k 0)"),
        f"  skipped    {s['skipped'] or 'none'}",
        f"  size       {s['size_bytes'] / 2**20:.1f} MiB; written by probing {s['probing_version']} at {s['created']}",
    ]
    return "\n".join(lines)


def info(cfg: InfoConfig) -> str:
    """The summary of ``cfg.path`` as text (or JSON with ``cfg.json``)."""
    summary = summarize(cfg.path)
    return json.dumps(summary, indent=2) if cfg.json else format_summary(summary)
