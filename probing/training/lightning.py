"""The Lightning CLI of the probes: ``ProbingCLI`` over the probe modules and the activation data.

The model is given as ``class_path``/``init_args`` (``probing.probes.LinearProbe``, ``MLPProbe``,
``LinearMLPProbe``); ``data`` is always :class:`~probing.data.ActivationDataModule`. The data's
``num_layers``, ``hidden_size``, ``num_classes``, ``layers``, ``class_names``, ``input_stats``,
``feature_meta`` and ``full_batch`` are linked into the model at instantiation
(:mod:`probing.probes.linked`). ``fit`` tests the best checkpoint at the end unless
``--test_after_fit false``, and ends with a short summary. :func:`build_cli` takes command-line
words (``probing.training.cli``) or typed values (:func:`probing.training.train.train`).
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
from probing.probes.linked import LINKED, LINKED_UNCHECKED
from probing.probes.module import ProbeModule
from probing.training.checkpoint_path import resolve_ckpt_path
from probing.training.summary import best_layers, fit_summary

log = logging.getLogger(__name__)
# the run's last lines ("I probing.training: done: run folder ...")
summary_log = logging.getLogger("probing.training")
NEEDS_CHECKPOINT = ("validate", "test", "predict")


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

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> Any:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in ("validate", "test"):
            # Lightning's results table has ~8 rows per layer and head; the report and the closing
            # summary say what matters (`--verbose true` prints the table)
            parser.set_defaults(verbose=False)
        return parser

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

    def after_validate(self) -> None:
        self._summary(None, this_validation=True)

    def _summary(self, best_ckpt: str | None, this_validation: bool = False) -> None:
        """The run folder, each probe's best layer and the files written: the last lines
        (``this_validation``: the best layers of the validation just run, not of a tested run)."""
        directory = wandb_utils.run_dir(self.trainer)  # a collective: on every rank
        if self.trainer.is_global_zero:
            own = self.model.best_layers()
            best = own if this_validation else best_layers(directory, own)
            summary_log.info("%s", fit_summary(directory, best, best_ckpt))


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


def finish_wandb() -> None:
    """Close the W&B run so that a later in-process command (tests, notebooks) starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
