"""The `probing` console script: one dispatcher for every stage.

`COMMANDS` is the registry: per command its light config parse, the library function that takes the
config, and its description; `probing fit|validate|test|predict` go to the Lightning CLI. User errors (:class:`ProbingError`) print one line and exit 2; bugs keep
their traceback.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from probing.errors import ProbingError

log = logging.getLogger("probing")


@dataclass(frozen=True)
class Command:
    """One row of the registry; every target is ``"module:function"``, imported only when used.

    ``config``: the light parse (``argv -> typed config``; no torch, Lightning or scikit-learn, so
    ``--help`` and ``--print_config``, which it answers itself, take a fraction of a second).
    ``run``: the library function that takes that config (its model is loaded there, after the
    model-free checks). ``report``: what the command line does with ``run``'s result, ``(cfg,
    result) -> exit code | None``; without it the exit code is 0.
    """

    config: str
    run: str
    description: str
    report: str | None = None


# The Lightning commands go through the training CLI (a thin LightningCLI) with their argv;
# `config` answers `--help`/`--print_config` with a short help, and returns for anything else.
TRAINER_COMMANDS = {"fit", "validate", "test", "predict"}
_TRAINER = ("probing.training.help:answer", "probing.training.cli:run")
COMMANDS: dict[str, Command] = {
    "extract": Command(
        "probing.features.extract_config:parse",
        "probing.features.extract:extract",
        "extract per-layer activations to an HDF5 feature file",
    ),
    "info": Command(
        "probing.features.info_config:parse",
        "probing.features.info:info",
        "summarise a feature file",
        report="probing.outputs:echo",
    ),
    "merge": Command(
        "probing.features.merge_config:parse",
        "probing.features.shards:merge",
        "merge the shards of a sharded extraction into one file",
    ),
    "fit": Command(*_TRAINER, "train probes on all layers (Lightning CLI)"),
    "validate": Command(*_TRAINER, "validate trained probes (Lightning CLI)"),
    "test": Command(*_TRAINER, "test trained probes, write per-layer metrics (Lightning CLI)"),
    "predict": Command(*_TRAINER, "per-prompt, per-layer probabilities (Lightning CLI)"),
    "weak": Command(
        "probing.probes.weak_config:parse",
        "probing.probes.weak:run_weak",
        "the paper's per-layer linear SVM and MLP(100) baselines",
    ),
    "generalize": Command(
        "probing.generalize.config:parse",
        "probing.generalize.run:generalize",
        "leave-one-source-out / train→test matrices: do probes generalise to unseen sources?",
    ),
    "directions": Command(
        "probing.directions.config:parse",
        "probing.directions.run:directions",
        "difference-in-means directions per layer, position and label set, their held-out AUROC",
    ),
    "lens": Command(
        "probing.lens.config:parse",
        "probing.lens.run:lens",
        "logit-lens emotion analysis and Top-K Intermediate Consistency",
    ),
    "refusal": Command(
        "probing.generation.refusal_config:parse",
        "probing.generation.refusal:refusal",
        "refusal rate per class (greedy continuations, keyword judge)",
    ),
    "graft": Command(
        "probing.grafting.config:parse",
        "probing.grafting.run:sweep",
        "logit-grafting sweep over layers",
    ),
    "monitor": Command(
        "probing.monitor.config:parse",
        "probing.monitor.run:monitor",
        "screen prompts with a trained probe before generating",
        report="probing.monitor.output:report",
    ),
    "compare": Command(
        "probing.compare.spec:parse",
        "probing.compare.run:compare",
        "the paper's accuracy grid across models and prompt formats",
        report="probing.compare.output:report",
    ),
    "demo": Command(
        "probing.demo_config:parse",
        "probing.demo:run_demo",
        "the whole pipeline on the embedded models, ending in a report",
    ),
    "cache": Command(
        "probing.models.cache_config:parse",
        "probing.models.cache:manage",
        "list or clear (--clear true) the GGUF models converted into the model cache",
        report="probing.outputs:echo",
    ),
}


def load(target: str) -> Callable[..., Any]:
    """The function named by a registry target ``"module:function"``."""
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def run_command(name: str, args: Sequence[str]) -> int:
    """Parse ``args`` with the command's light config parse, run its library function with the
    config, and turn the result into an exit code (raises :class:`ProbingError` for user errors)."""
    command = COMMANDS[name]
    if name in TRAINER_COMMANDS:
        argv = [name, *args]
        if _asks_for_help(args):
            load(command.config)(argv)  # exits after printing; returns when it did not apply
        return int(load(command.run)(argv) or 0)
    cfg = load(command.config)(list(args))  # answers --help / --print_config itself (exits)
    result = load(command.run)(cfg)
    return int(load(command.report)(cfg, result) or 0) if command.report else 0


def _asks_for_help(args: Sequence[str]) -> bool:
    return any(
        a in ("-h", "--help", "--print_config") or a.startswith("--print_config=") for a in args
    )


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: probing COMMAND [--config FILE] [options]  (probing COMMAND --help)",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {c.description}" for name, c in COMMANDS.items()]
    return "\n".join(lines)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest and notebooks swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger("probing")
    if not root.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname).1s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)


class ConfigError(ProbingError):
    """An option or config file the parser rejects (printed as one line with a ``--help`` hint)."""


def _one_line(message: str, limit: int = 2) -> str:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return " ".join(lines[:limit]) + (" …" if len(lines) > limit else "")


@contextlib.contextmanager
def _one_line_config_errors(command: str) -> Iterator[None]:
    """A top-level jsonargparse parser (its ``exit_on_error``) raises :class:`ConfigError` instead of
    printing a 20-line usage and exiting; nested parsers that raise for their callers are untouched."""
    from jsonargparse import ArgumentParser

    original = ArgumentParser.error

    def error(self, message, ex=None):  # noqa: ANN001 (jsonargparse's signature)
        if not self.exit_on_error:
            return original(self, message, ex)
        raise ConfigError(f"{_one_line(message)}; see `probing {command} --help`") from None

    ArgumentParser.error = error  # type: ignore[method-assign]
    try:
        yield
    finally:
        ArgumentParser.error = original  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `probing` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    if not args or args[0] in {"-h", "--help"}:
        sys.stdout.write(_usage() + "\n")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        sys.stderr.write(
            f"probing: unknown command {name!r}; expected one of {', '.join(COMMANDS)}\n"
        )
        return 2
    try:
        with _one_line_config_errors(name):
            code = run_command(name, rest)
    except ProbingError as err:
        sys.stderr.write(f"probing {name}: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"probing {name}: interrupted\n")
        return 130
    return int(code or 0)


def entry() -> None:
    """The console script (and ``python -m probing.cli``): :func:`main`, then exit with its status.

    Only the interpreter's shutdown runs after the command, and its last garbage collection walks
    every object of the thousands of modules torch and Lightning import (~1.3 s of a `probing fit`
    process); :func:`gc.freeze` lets it skip them. Exit handlers and finalisers still run.
    """
    try:
        status: int | str | None = main()
    except SystemExit as exc:  # --help, and the parsers' own exits
        status = exc.code
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    entry()
