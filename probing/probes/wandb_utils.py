"""Run directory and Weights & Biases helpers of a probe run (a no-op without a W&B logger)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


def wandb_mode(environ: Mapping[str, str] | None = None) -> str | None:
    """The ``mode`` for ``wandb.init``: ``"offline"`` without ``WANDB_API_KEY`` and ``WANDB_MODE``.

    None (W&B decides) when ``WANDB_MODE`` is set (it is respected) or an API key is: online.
    Switch to online with ``WANDB_API_KEY=...`` (or ``wandb login`` plus ``WANDB_MODE=online``).
    Reads the environment, never writes it.
    """
    env = os.environ if environ is None else environ
    if env.get("WANDB_MODE") or env.get("WANDB_API_KEY"):
        return None
    log.info("W&B runs offline (no WANDB_API_KEY); set WANDB_MODE=online or WANDB_API_KEY to sync")
    return "offline"


def set_wandb_mode(
    loggers: Sequence[Any], mode: str | None, environ: Mapping[str, str] | None = None
) -> None:
    """Give each W&B logger's run ``mode`` (unless its config names one) before its run starts.

    The run is also made quiet (no run history and summary tables at the end; the metrics files
    and the command's own summary say the same) unless the logger's config gives ``settings`` or
    ``WANDB_QUIET``/``WANDB_SILENT`` is set (``WANDB_QUIET=false`` brings the tables back)."""
    env = os.environ if environ is None else environ
    quiet = not (env.get("WANDB_QUIET") or env.get("WANDB_SILENT"))
    for lg in loggers:
        init = getattr(lg, "_wandb_init", None)  # WandbLogger's keyword arguments of wandb.init
        if not isinstance(init, dict):
            continue
        if mode is not None and init.get("mode") is None:
            init["mode"] = mode
        if quiet and init.get("settings") is None:
            init["settings"] = {"quiet": True}
        if init.get("anonymous", "") is None:  # Lightning passes None; wandb warns about the key
            del init["anonymous"]


def run_dir(trainer: L.Trainer) -> Path:
    """The run's directory: ``<save_dir>/<name>/<version>`` of the first logger (where Lightning puts
    ``checkpoints/``), or ``default_root_dir`` without a logger. A collective: call it on every rank."""
    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None:
        path = str(trainer.default_root_dir)
    else:
        save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
        version = logger.version
        version = version if isinstance(version, str) else f"version_{version}"
        path = os.path.join(str(save_dir), str(logger.name or ""), version)
    return Path(trainer.strategy.broadcast(path))


def wandb_loggers(trainer: L.Trainer | None) -> list[Any]:
    if trainer is None:
        return []
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:  # pragma: no cover - wandb missing
        return []
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def log_config(trainer: L.Trainer, key: str, values: dict[str, Any]) -> None:
    """Add ``values`` under ``key`` to the W&B run config (rank 0)."""
    if not trainer.is_global_zero:
        return
    for lg in wandb_loggers(trainer):
        lg.experiment.config.update({key: values}, allow_val_change=True)


def log_table(
    trainer: L.Trainer, key: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]
) -> None:
    if not trainer.is_global_zero:
        return
    for lg in wandb_loggers(trainer):
        lg.log_table(
            key=key, columns=list(columns), data=[[r.get(c) for c in columns] for r in rows]
        )


def log_image(trainer: L.Trainer, key: str, path: str | os.PathLike) -> None:
    if not trainer.is_global_zero:
        return
    for lg in wandb_loggers(trainer):
        lg.log_image(key=key, images=[str(path)])


def log_standalone(
    project: str,
    directory: str | os.PathLike,
    job_type: str,
    config: dict[str, Any],
    tables: Mapping[str, tuple[Sequence[str], Sequence[dict[str, Any]]]],
    images: Mapping[str, str | os.PathLike],
) -> None:
    """One W&B run of a command without a trainer (``generalize``, ``directions``): its config, each
    table (``name: (columns, rows as dicts)``; empty ones skipped) and each image, then finished."""
    import wandb

    run = wandb.init(
        project=project, dir=str(directory), job_type=job_type, config=config, mode=wandb_mode()
    )
    try:
        payload: dict[str, Any] = {
            name: wandb.Table(columns=list(cols), data=[[r.get(c) for c in cols] for r in rows])
            for name, (cols, rows) in tables.items()
            if rows
        }
        payload.update({name: wandb.Image(str(path)) for name, path in images.items()})
        run.log(payload)
    finally:
        run.finish()
