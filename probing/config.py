"""One front end for the non-Trainer commands: a typed dataclass is the schema.

``probing extract|refusal|graft|compare`` parse ``--config FILE.yaml`` and dotted overrides into their
dataclass the way LightningCLI does for the Trainer commands (same ``--print_config``, same errors).
"""

from __future__ import annotations

from typing import TypeVar

from jsonargparse import ActionConfigFile, ArgumentParser

T = TypeVar("T")


def build_parser(cls: type, prog: str, description: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description, default_env=False)
    parser.add_argument(
        "--config", action=ActionConfigFile, help="YAML config (options below override it)"
    )
    parser.add_class_arguments(cls, None, sub_configs=True)
    return parser


def parse_config(cls: type[T], argv: list[str], prog: str, description: str) -> T:
    """``argv`` (config files and overrides) → an instance of the dataclass ``cls``."""
    parser = build_parser(cls, prog, description)
    ns = parser.parse_args(argv)
    ns.pop("config", None)
    init = parser.instantiate_classes(ns)
    return init if isinstance(init, cls) else cls(**init.as_dict())
