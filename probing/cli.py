"""The `probing` console script: one dispatcher for every stage.

`probing extract|info|weak|...` go to small jsonargparse front ends; `probing fit|validate|test|predict`
go to the Lightning CLI. User errors (:class:`ProbingError`) print one line and exit 2; bugs keep
their traceback.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence

from probing.errors import ProbingError

log = logging.getLogger("probing")

# name -> "module:function"; each function takes the remaining argv and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "extract": (
        "probing.features.extract_cli:run",
        "extract per-layer activations to an HDF5 feature file",
    ),
    "info": ("probing.features.info:run", "summarise a feature file"),
    "merge": (
        "probing.features.merge_cli:run",
        "merge the shards of a sharded extraction into one file",
    ),
    "fit": ("probing.training.cli:run", "train probes on all layers (Lightning CLI)"),
    "validate": ("probing.training.cli:run", "validate trained probes (Lightning CLI)"),
    "test": (
        "probing.training.cli:run",
        "test trained probes, write per-layer metrics (Lightning CLI)",
    ),
    "predict": ("probing.training.cli:run", "per-prompt, per-layer probabilities (Lightning CLI)"),
    "weak": ("probing.probes.weak:run", "the paper's per-layer linear SVM and MLP(100) baselines"),
    "generalize": (
        "probing.generalize.cli:run",
        "leave-one-source-out / train→test matrices: do probes generalise to unseen sources?",
    ),
    "directions": (
        "probing.directions.cli:run",
        "difference-in-means directions per layer, position and label set, their held-out AUROC",
    ),
    "lens": (
        "probing.lens.cli:run",
        "logit-lens emotion analysis and Top-K Intermediate Consistency",
    ),
    "refusal": (
        "probing.generation.refusal:run",
        "refusal rate per class (greedy continuations, keyword judge)",
    ),
    "graft": ("probing.grafting.cli:run", "logit-grafting sweep over layers"),
    "monitor": ("probing.monitor.cli:run", "screen prompts with a trained probe before generating"),
    "compare": (
        "probing.compare.cli:run",
        "the paper's accuracy grid across models and prompt formats",
    ),
    "demo": ("probing.demo:run", "the whole pipeline on the embedded models, ending in a report"),
    "cache": (
        "probing.models.cache_cli:run",
        "list or clear (--clear true) the GGUF models converted into the model cache",
    ),
}
TRAINER_COMMANDS = {"fit", "validate", "test", "predict"}
# `--help` and `--print_config` are answered by these light functions (the command's own parse, from
# its config module; the Trainer commands' short help) before the command's module and its torch,
# Lightning or scikit-learn are imported: `probing COMMAND --help` takes well under 2 s.
HELP: dict[str, str] = {
    "extract": "probing.features.extract_config:parse",
    "weak": "probing.probes.weak_config:parse",
    "generalize": "probing.generalize.config:parse",
    "directions": "probing.directions.config:parse",
    "lens": "probing.lens.config:parse",
    "refusal": "probing.generation.refusal_config:parse",
    "graft": "probing.grafting.config:parse",
    "monitor": "probing.monitor.config:parse",
    "compare": "probing.compare.spec:parse",
    "demo": "probing.demo_config:parse",
    **{name: "probing.training.help:answer" for name in TRAINER_COMMANDS},
}


def _load(target: str) -> Callable[[list[str]], int | None]:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


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
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
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
    target = COMMANDS[name][0]
    argv = [name, *rest] if name in TRAINER_COMMANDS else rest
    try:
        with _one_line_config_errors(name):
            if name in HELP and _asks_for_help(rest):
                _load(HELP[name])(argv)  # exits after printing; returns when it did not apply
            code = _load(target)(argv)
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
