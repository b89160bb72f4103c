"""`probing extract --config configs/extract/NAME.yaml [--option value ...]`."""

from __future__ import annotations

from jsonargparse import ActionConfigFile, ArgumentParser

from probing.features.extract import ExtractConfig, extract


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="probing extract",
        description="Extract per-layer hidden states and logit-lens top-k of prompts into an HDF5 feature file.",
        default_env=False,
    )
    parser.add_argument(
        "--config", action=ActionConfigFile, help="YAML config (options below override it)"
    )
    parser.add_class_arguments(ExtractConfig, None, sub_configs=True)
    return parser


def parse(argv: list[str]) -> ExtractConfig:
    parser = build_parser()
    ns = parser.parse_args(argv)
    ns.pop("config", None)
    init = parser.instantiate_classes(ns)
    return ExtractConfig(**init.as_dict()) if not isinstance(init, ExtractConfig) else init


def run(argv: list[str]) -> int:
    extract(parse(argv))
    return 0
