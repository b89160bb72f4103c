"""``--ckpt_path`` of ``probing fit|validate|test|predict``: a checkpoint file, a run folder, or
``best``/``last`` of the newest run, resolved to one readable, checked checkpoint file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from probing.errors import ProbingError
from probing.probes.checkpoint import probe_class, read_checkpoint

log = logging.getLogger(__name__)
CKPT_HELP = (
    "a checkpoint file of `probing fit`, a run directory (its best checkpoint), or best/last "
    "(of the newest run under the logger's save_dir or --trainer.default_root_dir)"
)


def run_roots(trainer_cfg: Any) -> list[Path]:
    """Folders that hold run directories: each logger's ``save_dir``, then ``default_root_dir``."""
    roots: list[Path] = []
    logger = trainer_cfg.get("logger")
    for lg in logger if isinstance(logger, list) else [logger]:
        init = lg.get("init_args") if hasattr(lg, "get") else None
        save = init.get("save_dir") if init is not None and hasattr(init, "get") else None
        if save:
            roots.append(Path(save))
    roots.append(Path(trainer_cfg.get("default_root_dir") or "."))
    return roots


def _best_in(folder: Path) -> Path:
    """The best checkpoint of a run's ``checkpoints/`` folder (as ModelCheckpoint recorded it)."""
    last = folder / "last.ckpt"
    if last.is_file():
        for state in (read_checkpoint(last, "--ckpt_path").get("callbacks") or {}).values():
            best = state.get("best_model_path") if isinstance(state, dict) else None
            if best and (folder / Path(best).name).is_file():
                return folder / Path(best).name
    others = sorted(p for p in folder.glob("*.ckpt") if p.name != "last.ckpt")
    if len(others) == 1:
        return others[0]
    if not others and last.is_file():
        return last
    raise ProbingError(
        f"--ckpt_path best: cannot tell the best of {[p.name for p in others]} in {folder}; "
        "give the checkpoint file with --ckpt_path"
    )


def resolve_ckpt_path(value: str | None, subcommand: str, trainer_cfg: Any) -> str:
    """``--ckpt_path`` as a readable checkpoint file (checked: tensors and plain data only)."""
    if value is None:
        raise ProbingError(
            f"probing {subcommand} scores a trained probe: give --ckpt_path ({CKPT_HELP}); "
            "without it an untrained probe would be scored"
        )
    path = Path(value).expanduser()
    if value in ("best", "last") and not path.exists():
        patterns = (
            "checkpoints",
            "*/checkpoints",
            "*/*/checkpoints",
        )  # <save_dir>/<name>/<version>
        runs = [c for root in run_roots(trainer_cfg) for pat in patterns for c in root.glob(pat)]
        runs = [c for c in runs if any(c.glob("*.ckpt"))]
        if not runs:
            roots = ", ".join(str(r) for r in run_roots(trainer_cfg))
            raise ProbingError(
                f"--ckpt_path {value}: no run with checkpoints under {roots}; give the checkpoint "
                "file or run directory with --ckpt_path"
            )
        folder = max(runs, key=lambda c: max(p.stat().st_mtime for p in c.glob("*.ckpt")))
        path = _best_in(folder) if value == "best" else folder / "last.ckpt"
        log.info("--ckpt_path %s: %s", value, path)
    elif path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        path = _best_in(folder)
    if not path.is_file():
        raise ProbingError(f"--ckpt_path {path} does not exist; give {CKPT_HELP}")
    # one line for an unreadable or unsafe file; every probe class it names from the allow-list
    ckpt = read_checkpoint(path, "--ckpt_path")
    hp = ckpt.get("hyper_parameters") or {}
    for target in (ckpt.get("probe_class"), hp.get("_class_path")):
        if target:
            probe_class(target, f"--ckpt_path {path}")
    return str(path)
