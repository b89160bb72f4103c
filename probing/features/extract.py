"""Extraction: prompts → rendered tokens → per-layer activations streamed into a feature file."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import probing
from probing.errors import ProbingError
from probing.features.activations import ActivationReader
from probing.features.atomic import WriteLock, partial_path
from probing.features.extract_config import ExtractConfig
from probing.features.layout import normalize, positions_text
from probing.features.plan import Plan, context_length, fingerprint, plan_rows, slice_plan
from probing.features.shards import (
    all_shards_complete,
    merge_shards,
    parse_shard,
    shard_bounds,
    shard_from_env,
    shard_path,
)
from probing.features.store import looks_like_hdf5, read_meta
from probing.features.writer import FeatureWriter
from probing.models.context import config_context_length, model_context_length
from probing.models.load import (
    LoadedModel,
    load_model,
    load_tokenizer,
    model_identity,
    resolve_model,
)
from probing.outputs import check_output_file
from probing.progress import progress_bar
from probing.prompts.sources import BUILTIN_SETS, load_prompts

log = logging.getLogger(__name__)


def _validate(cfg: ExtractConfig) -> None:
    checks = [
        (cfg.batch_size >= 1, f"--batch_size must be >= 1, got {cfg.batch_size}"),
        (cfg.lens_top_k >= 0, f"--lens_top_k must be >= 0 (0: no lens), got {cfg.lens_top_k}"),
        (cfg.k >= 1, f"--k must be >= 1, got {cfg.k}"),
        (
            cfg.max_tokens is None or cfg.max_tokens >= 1,
            f"--max_tokens must be >= 1, got {cfg.max_tokens}",
        ),
        (
            not (cfg.resume and cfg.overwrite),
            "--resume and --overwrite exclude each other; choose one",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ProbingError(message)
    normalize(cfg.positions)  # a list that cannot be stored is refused before anything loads


def _check_existing(
    path: Path, cfg: ExtractConfig, identity: dict[str, Any], plan: Plan, fp: str
) -> str:
    """``new``, ``done`` (identical finished file) or ``resume`` (of ``path.partial``).

    Called with the output's write lock held, so nobody else writes ``path`` or ``path.partial``.
    """
    partial = partial_path(path)
    if cfg.overwrite or not (path.exists() or partial.exists()):
        return "new"
    meta: dict[str, Any] = {}
    if path.exists():
        if not looks_like_hdf5(path):
            raise ProbingError(
                f"--output {path} exists and is not an HDF5 file (so no features of an earlier "
                "run); choose another --output, or pass --overwrite to replace it"
            )
        try:
            meta = read_meta(path)
        except ProbingError as err:
            raise ProbingError(
                f"--output {path} exists and is not a usable feature file ({err}); choose another "
                "--output, or pass --overwrite to replace it"
            ) from None
        if meta.get("fingerprint") == fp and meta.get("complete"):
            return "done"
        if meta.get("fingerprint") == fp and not partial.exists():
            # an interrupted file written in place (before OUTPUT.partial existed): resume it there
            os.replace(path, partial)
    if partial.exists():
        try:
            pmeta = read_meta(partial)
        except ProbingError:
            pmeta = {}
        if pmeta.get("fingerprint") == fp and pmeta.get("complete"):
            os.replace(partial, path)  # finished, but stopped before the rename
            return "done"
        if pmeta.get("fingerprint") == fp:
            if cfg.resume:
                return "resume"
            raise ProbingError(
                f"--output {path} holds an interrupted run of this config (in {partial.name}); pass --resume to continue it or --overwrite to start over"
            )
        if not meta:
            raise ProbingError(
                f"{partial} holds an interrupted run of another model, prompt set or config; pass --overwrite to start over or choose another --output"
            )
    if meta.get("model") != identity["model"] or meta.get("gguf_sha256") != identity["gguf_sha256"]:
        what = f"model {meta.get('model')!r}"
    elif meta.get("prompt_hash") != plan.prompt_hash:
        what = "another prompt set"
    else:
        what = "other extraction settings"
    raise ProbingError(
        f"--output {path} already holds features of {what}; pass --overwrite to replace it or choose another --output"
    )


def _check_not_an_input(cfg: ExtractConfig, outputs: list[Path]) -> None:
    """Refuse an --output that is a prompt file or the model file: writing there would replace it,
    with --overwrite or not."""
    inputs = [
        ("prompt file", Path(s.path).expanduser())
        for s in cfg.prompts
        if s.path not in BUILTIN_SETS and not s.path.startswith("hf:")
    ]
    inputs.append(("model file", Path(cfg.model.name).expanduser()))
    for out in outputs:
        for what, path in inputs:
            if out.exists() and path.is_file() and os.path.samefile(out, path):
                raise ProbingError(
                    f"--output {out} is the {what} {path}; writing the features there would "
                    "replace it: choose another --output"
                )


def _metadata(
    cfg: ExtractConfig, lm: LoadedModel, plan: Plan, fp: str, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        **extra,
        **lm.meta,
        "probing_version": probing.__version__,
        "num_decoder_layers": lm.parts.num_decoder_layers,
        "template": plan.template,
        "system_prompt": cfg.system_prompt or "",
        "positions": positions_text(normalize(cfg.positions)),
        "position_names": plan.position_names,
        "position_offsets": plan.position_offsets,
        "label_names": plan.label_names,
        "sources": [dataclasses.asdict(s) for s in cfg.prompts],
        "prompt_hash": plan.prompt_hash,
        "fingerprint": fp,
        "skipped": plan.skipped,
        "config": _config_dict(cfg),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _config_dict(cfg: ExtractConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    for key in ("resume", "overwrite", "progress", "shard"):
        d.pop(key)
    return d


def _shard(cfg: ExtractConfig) -> tuple[int, int] | None:
    if cfg.shard:
        return parse_shard(cfg.shard)
    return shard_from_env()


def _on_local_gpu(cfg: ExtractConfig, shard: tuple[int, int] | None) -> ExtractConfig:
    """A copy of ``cfg`` whose ``--model.device cuda`` is this torchrun process's GPU (sharded runs)."""
    if shard and cfg.model.device == "cuda" and "LOCAL_RANK" in os.environ:
        model = dataclasses.replace(cfg.model, device=f"cuda:{os.environ['LOCAL_RANK']}")
        return dataclasses.replace(cfg, model=model)
    return cfg


def extract(cfg: ExtractConfig, lm: LoadedModel | None = None) -> Path:
    """Run an extraction; returns the feature file's path. ``lm`` skips loading (tests, notebooks)."""
    _validate(cfg)
    shard = _shard(cfg)
    cfg = _on_local_gpu(cfg, shard)
    # model-free checks first: the tokenizer and model load take seconds to minutes
    prompts = load_prompts(cfg.prompts)
    _check_not_an_input(cfg, [Path(cfg.output)])
    check_output_file(cfg.output, example="features.h5", existing=False)  # finished: only read
    if lm is None:
        source = resolve_model(cfg.model)  # once: the loaders below reuse it (and its GGUF hash)
        tokenizer = load_tokenizer(source)
        identity = model_identity(source)
        model_length = model_context_length(source)
    else:
        source, tokenizer = None, lm.tokenizer
        identity = {
            k: lm.meta[k]
            for k in ("model", "model_source", "model_revision", "gguf_sha256", "dtype")
        }
        model_length = config_context_length(lm.model.config)
    plan = plan_rows(cfg, tokenizer, context_length(tokenizer, model_length), prompts)
    fp = fingerprint(cfg, identity, plan)
    path, file_fp, extra = Path(cfg.output), fp, {"plan_fingerprint": fp}
    if shard:
        index, count = shard
        start, stop = shard_bounds(plan.rows.n_tokens, count)[index]
        extra.update(
            shard_index=index, shard_count=count, shard_start=start, total_rows=len(plan.rows)
        )
        plan = slice_plan(plan, start, stop)
        path = shard_path(cfg.output, index, count)
        file_fp = hashlib.sha256(f"{fp} shard {index}/{count}".encode()).hexdigest()
        log.info("shard %d of %d: rows %d:%d -> %s", index, count, start, stop, path)
    _check_not_an_input(cfg, [path, Path(cfg.output)])
    with WriteLock(path) as lock:  # before the model loads: also checks that --output is writable
        state = _check_existing(path, cfg, identity, plan, file_fp)
        if state == "done":
            log.info(
                "%s is already complete for this config (%d rows); nothing to do",
                path,
                len(plan.rows),
            )
        else:
            if lm is None:
                lm = load_model(source, tokenizer)
            _extract_rows(cfg, lm, plan, path, file_fp, extra, state, lock)
    if shard:
        return _merge_if_last(cfg, shard[1]) or path
    return path


def _extract_rows(
    cfg: ExtractConfig,
    lm: LoadedModel,
    plan: Plan,
    path: Path,
    fp: str,
    extra: dict,
    state: str,
    lock: WriteLock,
) -> None:
    stored = len(plan.position_names)
    reader = ActivationReader(lm, plan.position_offsets, top_k=cfg.lens_top_k)
    shared = reader.share_prefix(plan.ids, cfg.progress)
    if shared:
        log.info("the %d tokens every prompt starts with run once; their cache is reused", shared)
    if state == "resume":
        writer = FeatureWriter.reopen(path, lock)
        log.info("resuming %s at row %d of %d", path, writer.rows_done, writer.num_rows)
    else:
        writer = FeatureWriter.create(
            path,
            _metadata(cfg, lm, plan, fp, extra),
            plan.rows,
            num_layers=lm.parts.num_layers,
            num_positions=stored,
            hidden_size=int(lm.model.config.hidden_size),
            top_k=cfg.lens_top_k,
            storage_dtype=cfg.storage_dtype,
            lock=lock,
        )
    try:
        _run(writer, reader, plan, cfg)
        writer.finish()
    finally:
        writer.close()
    log.info(
        "wrote %s: %d rows × %d layers × %d",
        path,
        len(plan.rows),
        lm.parts.num_layers,
        lm.model.config.hidden_size,
    )


def _merge_if_last(cfg: ExtractConfig, count: int) -> Path | None:
    """Merge the shards into ``cfg.output`` once all are complete (whichever shard sees that)."""
    paths = all_shards_complete(cfg.output, count)
    if paths is None:
        log.info(
            "other shards are still running; the last one to finish merges them (or: probing merge)"
        )
        return None
    out = merge_shards(paths, cfg.output, overwrite=cfg.overwrite)
    log.info("all %d shards complete: merged into %s", count, out)
    return out


def _run(writer: FeatureWriter, reader: ActivationReader, plan: Plan, cfg: ExtractConfig) -> None:
    start, total = writer.rows_done, len(plan.ids)
    with progress_bar(total, "extract", "prompt", cfg.progress, initial=start) as bar:
        for lo in range(start, total, cfg.batch_size):
            batch = plan.ids[lo : lo + cfg.batch_size]
            out = reader(batch)
            writer.write(out.hidden.numpy(), out.lens_ids.numpy(), out.lens_logits.numpy())
            bar.update(len(batch))
