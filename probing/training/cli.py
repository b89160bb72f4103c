"""``probing fit|validate|test|predict``: the Lightning CLI over probe modules and the activation data.

The model is given as ``class_path``/``init_args`` (``probing.probes.LinearProbe``, ``MLPProbe``,
``LinearMLPProbe``); ``data`` is always :class:`~probing.data.ActivationDataModule`. The data's
``num_layers``, ``hidden_size``, ``num_classes``, ``layers``, ``class_names``, ``input_stats``,
``feature_meta`` and ``full_batch`` are linked into the model at instantiation
(:mod:`probing.probes.linked`). ``fit`` tests the best checkpoint at the end unless ``--test_after_fit false``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from probing.data import ActivationDataModule
from probing.data.selection import check_split_rows
from probing.errors import ProbingError
from probing.probes import wandb_utils
from probing.probes.checkpoint import probe_class, read_checkpoint
from probing.probes.linked import LINKED, LINKED_UNCHECKED
from probing.probes.module import ProbeModule
from probing.training.help import full_help_argv
from probing.training.summary import best_layers, fit_summary

log = logging.getLogger(__name__)
NEEDS_CHECKPOINT = ("validate", "test", "predict")
CKPT_HELP = (
    "a checkpoint file of `probing fit`, a run directory (its best checkpoint), or best/last "
    "(of the newest run under the logger's save_dir or --trainer.default_root_dir)"
)


def _run_roots(trainer_cfg: Any) -> list[Path]:
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
        runs = [c for root in _run_roots(trainer_cfg) for pat in patterns for c in root.glob(pat)]
        runs = [c for c in runs if any(c.glob("*.ckpt"))]
        if not runs:
            roots = ", ".join(str(r) for r in _run_roots(trainer_cfg))
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


class ProbingSaveConfig(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml`` in the run directory and into the W&B run config."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.already_saved:
            return
        directory = wandb_utils.run_dir(trainer)
        if trainer.is_global_zero:
            directory.mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config,
                directory / self.config_filename,
                skip_none=False,
                overwrite=True,
                multifile=False,
            )
            values = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            wandb_utils.log_config(trainer, "cli", values)
        self.already_saved = True


class ProbingCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in (*LINKED, *LINKED_UNCHECKED):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After `fit`, test the best checkpoint and write the per-layer metrics and plot.",
        )

    def _parse_ckpt_path(self) -> None:
        # before Lightning reads the checkpoint's hyperparameters into the config: resolve
        # best/last/run directories (a new process has no trainer state), check the file, and
        # refuse test/validate/predict without one (they would score an untrained probe)
        sub = self.config.get("subcommand")
        if sub:
            cfg = self.config[sub]
            cfg["weights_only"] = True  # Lightning loads --ckpt_path as tensors and plain data
            if sub in NEEDS_CHECKPOINT or cfg.get("ckpt_path"):
                cfg["ckpt_path"] = resolve_ckpt_path(cfg.get("ckpt_path"), sub, cfg["trainer"])
            if sub == "fit" and cfg.get("ckpt_path"):
                _resume_in_own_run(cfg)
        try:
            super()._parse_ckpt_path()
        except (ValueError, SystemExit) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ProbingError(
                f"the hyperparameters in --ckpt_path {self.config[sub].get('ckpt_path')} do not fit "
                f"the configured probe ({first}); give a checkpoint of `probing fit` with the same "
                "--model (class_path)"
            ) from None

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # before the trainer starts (and its loggers write): every split the command uses has rows
        sub, dm = self.subcommand, self.datamodule
        splits = {"fit": ["val"], "validate": ["val"], "test": ["test"]}.get(sub or "", [])
        if sub == "fit" and self.config[sub].get("test_after_fit", True):
            splits.append("test")
        splits = [s for s in splits if not (s == "test" and dm.test_path)]
        check_split_rows(dm.split_pos, dm.split_fractions, splits, dm.path)
        # the run's W&B mode (offline without an API key), given to its loggers, not the environment
        loggers = wandb_utils.wandb_loggers(self.trainer)
        if loggers:
            wandb_utils.set_wandb_mode(loggers, wandb_utils.wandb_mode())

    def _run_subcommand(self, subcommand: str) -> None:
        # Lightning answers Ctrl-C with a graceful shutdown, then sys.exit(1) and SIGINT ignored from
        # then on; probing's commands answer it with "interrupted" and exit 130 (probing.cli)
        handler = signal.getsignal(signal.SIGINT)
        try:
            super()._run_subcommand(subcommand)
        except SystemExit:
            if not self.trainer.interrupted:
                raise
            with contextlib.suppress(ValueError, TypeError):  # (not the main thread)
                signal.signal(signal.SIGINT, handler)
            raise KeyboardInterrupt from None

    def after_fit(self) -> None:
        ckpt = self.trainer.checkpoint_callback
        best_ckpt = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
        if self.config[self.subcommand].get("test_after_fit", True):
            # no Lightning results table (~8 rows per layer and head): the report logs the best
            # layers and where the per-layer and per-source tables landed
            self.trainer.test(
                self.model,
                datamodule=self.datamodule,
                ckpt_path="best" if best_ckpt else None,
                weights_only=True,
                verbose=False,
            )
        self._summary(best_ckpt or None)

    def after_test(self) -> None:
        self._summary(None)

    def _summary(self, best_ckpt: str | None) -> None:
        """The run folder, each probe's best layer and the files written: the last lines."""
        directory = wandb_utils.run_dir(self.trainer)  # a collective: on every rank
        if self.trainer.is_global_zero:
            best = best_layers(directory, self.model.best_layers())
            log.info("%s", fit_summary(directory, best, best_ckpt))


def _resume_in_own_run(cfg: Any) -> None:
    """``fit --ckpt_path RUN/checkpoints/X.ckpt``: keep writing into RUN (the logger's version)."""
    ckpt = Path(cfg["ckpt_path"]).resolve()
    if ckpt.parent.name != "checkpoints":
        return
    run = ckpt.parent.parent
    logger = cfg["trainer"].get("logger")
    for lg in logger if isinstance(logger, list) else [logger]:
        init = lg.get("init_args") if hasattr(lg, "get") else None
        if init is None or "version" not in init or init.get("version") is not None:
            continue
        init["version"] = run.name  # the run directory is <save_dir>/<name>/<version>
        if "resume" in init and init.get("resume") is None:
            init["resume"] = "allow"  # W&B: continue the run of that id
        log.info("resuming %s: logging into its run directory %s", ckpt.name, run)


class _NoTips(logging.Filter):
    """Drops Lightning's advertisement for its hosted logger ("💡 Tip: ... litlogger ...") and its
    Ctrl-C notice (probing says "interrupted" once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (text.startswith("💡 Tip:") or "Detected KeyboardInterrupt" in text)


def _quiet_lightning() -> None:
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in rank_zero.filters):
        rank_zero.addFilter(_NoTips())


def build_cli(argv: Sequence[str] | dict[str, Any], run: bool = True) -> ProbingCLI:
    """Parse ``argv`` (subcommand first; or a dict ``{"subcommand": ..., SUB: values}``) and, with
    ``run``, execute it. Importable for tests."""
    _quiet_lightning()
    with warnings.catch_warnings():
        # the dispatcher passes argv explicitly while sys.argv holds the same words
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        # Lightning's pytree helper on torch >= 2.10 (upstream; nothing a user can change)
        warnings.filterwarnings(
            "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated"
        )
        # the probes log per epoch only, so the step-logging interval never hides a value; its
        # warning came with every small or full-batch run (fewer batches than log_every_n_steps)
        warnings.filterwarnings(
            "ignore", message=r"The number of training batches \(\d+\) is smaller than the logging"
        )
        return ProbingCLI(
            ProbeModule,
            ActivationDataModule,
            subclass_mode_model=True,
            save_config_callback=ProbingSaveConfig,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=42,
            # Lightning's parameter table says little about L heads; --trainer.enable_model_summary true
            trainer_defaults={"enable_model_summary": False},
            parser_kwargs={"prog": "probing"},
            args=argv if isinstance(argv, dict) else list(argv),
            run=run,
            auto_configure_optimizers=False,
        )


def run(argv: Sequence[str]) -> int:
    """Entry of ``probing fit|validate|test|predict`` (argv starts with the subcommand)."""
    try:
        build_cli(full_help_argv(argv))
    finally:
        _finish_wandb()
    return 0


def fit_probes(config: str | Path, overrides: dict[str, Any] | None = None) -> Path:
    """The library form of ``probing fit``: train the probes of the fit config ``config`` (YAML) with
    dotted ``overrides`` (``{"data.path": "f.h5", "trainer.max_epochs": 5, "trainer.logger": False}``,
    typed values, given to the parser as values, not command-line words); returns the run folder
    (metrics, config and checkpoints)."""
    values = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    for key, value in (overrides or {}).items():
        _set_dotted(values, key, str(value) if isinstance(value, Path) else value, config)
    try:
        cli = build_cli({"subcommand": "fit", "fit": values})
    finally:
        _finish_wandb()
    return wandb_utils.run_dir(cli.trainer)


def _set_dotted(values: dict[str, Any], key: str, value: Any, config: str | Path) -> None:
    *parents, last = key.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ProbingError(f"override {key!r}: {part!r} in {config} is not a mapping")
    node[last] = value


def _finish_wandb() -> None:
    """Close the W&B run so that a later in-process command (tests, notebooks) starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
