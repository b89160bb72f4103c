"""``probing fit|validate|test|predict``: the Lightning CLI over probe modules and the activation data.

The model is given as ``class_path``/``init_args`` (``probing.probes.LinearProbe``, ``MLPProbe``,
``LinearMLPProbe``); ``data`` is always :class:`~probing.data.ActivationDataModule`. The data's
``num_layers``, ``hidden_size``, ``num_classes``, ``layers`` and ``class_names`` are linked into the
model. ``fit`` tests the best checkpoint at the end unless ``--test_after_fit false``.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from probing.data import ActivationDataModule
from probing.probes.module import ProbeModule
from probing.training import wandb_utils

log = logging.getLogger(__name__)
LINKS = ("num_layers", "hidden_size", "num_classes", "layers", "class_names")


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
        for name in LINKS:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After `fit`, test the best checkpoint and write the per-layer metrics and plot.",
        )

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True):
            return
        ckpt = self.trainer.checkpoint_callback
        ckpt_path = "best" if ckpt is not None and getattr(ckpt, "best_model_path", "") else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)


def build_cli(argv: Sequence[str], run: bool = True) -> ProbingCLI:
    """Parse ``argv`` (subcommand first) and, with ``run``, execute it. Importable for tests."""
    wandb_utils.configure_wandb_mode()
    with warnings.catch_warnings():
        # the dispatcher passes argv explicitly while sys.argv holds the same words
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return ProbingCLI(
            ProbeModule,
            ActivationDataModule,
            subclass_mode_model=True,
            save_config_callback=ProbingSaveConfig,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=42,
            parser_kwargs={"prog": "probing"},
            args=list(argv),
            run=run,
            auto_configure_optimizers=False,
        )


def run(argv: Sequence[str]) -> int:
    """Entry of ``probing fit|validate|test|predict`` (argv starts with the subcommand)."""
    try:
        build_cli(argv)
    finally:
        _finish_wandb()
    return 0


def _finish_wandb() -> None:
    """Close the W&B run so that a later in-process command (tests, notebooks) starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
