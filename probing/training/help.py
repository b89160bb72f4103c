"""``probing fit|validate|test|predict --help``: the common options on one screen, without Lightning.

The Lightning CLI's own help lists every Trainer option (~560 lines) and needs Lightning, torch and
torchmetrics imported (seconds); ``--help all`` still shows it. Every option named here is an option of
that parser (a test checks it); the data options and their help are :class:`DataOptions`'.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
import textwrap
from collections.abc import Sequence

from probing.data.options import DataOptions

WIDTH = 100
SUMMARY = {
    "fit": "Train probes on every selected layer of a feature file, then test the best checkpoint.",
    "validate": "Score a trained probe on the validation split.",
    "test": "Score a trained probe on the test split; write per-layer metrics, plot and reports.",
    "predict": "Per-prompt, per-layer probabilities of a trained probe.",
}
PROBES = "probing.probes.LinearProbe, MLPProbe or LinearMLPProbe"
CKPT = (
    "--ckpt_path PATH",
    "a checkpoint of `probing fit`, its run folder, or best/last (the newest run's)",
)
COMMON = [
    (
        "-c, --config FILE",
        "YAML config, e.g. configs/probe/linear.yaml (later options override it)",
    ),
    ("--print_config", "print the resolved config (every option, as YAML) and exit"),
    ("--model CLASS", f"the probe: {PROBES}"),
    ("--model.lr LR", "its learning rate (any init argument: --model.NAME VALUE)"),
]
TRAINER = [
    ("--trainer.max_epochs N", "training epochs (mini-batches; full batch fits in one pass)"),
    ("--trainer.accelerator A", "cpu, gpu or auto"),
    ("--trainer.devices N", "devices (several: DDP)"),
    ("--trainer.logger false", "no W&B logger (offline without an API key otherwise)"),
    ("--trainer.default_root_dir DIR", "where runs go when there is no logger"),
    ("--seed_everything N", "seed of initialisation and shuffling"),
]
EVALUATE = [("--verbose true", "also print Lightning's table of every logged metric")]
FIT_ONLY = [
    ("--test_after_fit BOOL", "test the best checkpoint after training (default true)"),
    ("--ckpt_path PATH", "resume from this checkpoint of an earlier `probing fit`"),
]


def _first_sentence(text: str) -> str:
    text = " ".join(text.split()).replace("``", "")
    end = re.search(r"\.(?=\s+[A-Z]|$)", text)
    return text[: end.start() + 1] if end else text


def data_options() -> list[tuple[str, str]]:
    """``(--data.NAME VALUE, first sentence of its help (default))`` for every data option."""
    doc = inspect.cleandoc(DataOptions.__doc__ or "")
    entries = re.findall(r"^    (\w+): (.*?)(?=^    \w+: |\Z)", doc, flags=re.M | re.S)
    helps = {name: _first_sentence(text) for name, text in entries}
    rows = []
    for f in dataclasses.fields(DataOptions):
        shown = f.default not in (dataclasses.MISSING, None)
        default = f" (default {json.dumps(f.default)})" if shown else ""
        rows.append((f"--data.{f.name}", helps.get(f.name, "") + default))
    return rows


def _section(title: str, rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(option) for option, _ in rows)
    lines = [f"{title}:"]
    for option, text in rows:
        lines += textwrap.wrap(
            text,
            WIDTH,
            initial_indent=f"  {option:<{width}}  ",
            subsequent_indent=" " * (width + 4),
            break_on_hyphens=False,
        )
    return [*lines, ""]


def short_help(subcommand: str) -> str:
    lines = [f"usage: probing {subcommand} [--config FILE] [options]", "", SUMMARY[subcommand], ""]
    common = COMMON + ([] if subcommand == "fit" else [CKPT])
    lines += _section("common options", common)
    lines += _section("data (the feature file; --data.path is required)", data_options())
    extra = {"fit": FIT_ONLY, "validate": EVALUATE, "test": EVALUATE}.get(subcommand, [])
    lines += _section("trainer", TRAINER + extra)
    more = [
        (f"probing {subcommand} --help all", "every option, the Trainer's (~560 lines)"),
        (f"probing {subcommand} --model.help LinearProbe", "the options of one probe class"),
        (f"probing {subcommand} --config C --print_config", "every value in effect, as YAML"),
        ("docs/probes.md", "how probes are trained and read"),
    ]
    lines += _section("more", more)
    return "\n".join(lines)


def answer(argv: Sequence[str]) -> None:
    """``argv`` (subcommand first) asks for ``--help`` (not ``--help all``): print the short help and
    exit 0; otherwise return and let the Lightning CLI parse it."""
    args = list(argv)
    for i, arg in enumerate(args[1:], start=1):
        if arg in ("-h", "--help"):
            if i + 1 < len(args) and args[i + 1] == "all":
                return
            sys.stdout.write(short_help(args[0]))
            raise SystemExit(0)


def full_help_argv(argv: Sequence[str]) -> list[str]:
    """``--help all`` → ``--help`` (the Lightning CLI's own help of every option)."""
    out = list(argv)
    for i in range(len(out) - 1, 0, -1):
        if out[i] == "all" and out[i - 1] in ("-h", "--help"):
            del out[i]
    return out
