"""One front end for the non-Trainer commands: a typed dataclass is the schema.

Every ``probing COMMAND`` but ``fit|validate|test|predict`` parses ``--config FILE.yaml`` and dotted
overrides into its dataclass the way LightningCLI does for the Trainer commands (same
``--print_config``, ``--help`` and errors). Three conveniences keep short command lines short:

- a bool option given alone means ``true`` (``--json`` = ``--json true``);
- ``positional`` fields may be given without their flag (``probing info FILE`` = ``--path FILE``; a list
  field takes all such arguments: ``probing merge A B`` = ``--shards '["A", "B"]'``);
- ``aliases`` map deprecated spellings to the current ones (a warning says which).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from jsonargparse import ActionConfigFile, ArgumentParser

from probing.errors import ProbingError

T = TypeVar("T")
log = logging.getLogger(__name__)
BOOL_WORDS = {"true", "false", "yes", "no", "1", "0", "on", "off"}
NO_VALUE = {"-h", "--help", "--print_config"}
_UnionType = type(int | None)


def build_parser(
    cls: type,
    prog: str,
    description: str,
    defaults: Mapping[str, Any] | None = None,
    sub_configs: bool = True,
) -> ArgumentParser:
    """``sub_configs``: nested dataclass options may be given as a YAML file (turn it off when a
    ``str | list[...]`` option takes a data file that must not be read as a config)."""
    parser = ArgumentParser(prog=prog, description=description, default_env=False)
    parser.add_argument(
        "--config", action=ActionConfigFile, help="YAML config (options below override it)"
    )
    parser.add_class_arguments(cls, None, sub_configs=sub_configs)
    if defaults:
        parser.set_defaults(dict(defaults))
    return parser


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 (an unresolvable hint: no conveniences for that class)
        return {}


def _is(hint: Any, kind: type) -> bool:
    """``hint`` is ``kind``, ``kind | None`` or (for ``list``) ``list[...] | None``."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UnionType) else ()
    return any(h is kind or typing.get_origin(h) is kind for h in (hint, *options))


def bool_options(cls: type, prefix: str = "") -> set[str]:
    """``--name`` of every bool field of the dataclass ``cls`` (nested dataclasses dotted)."""
    out: set[str] = set()
    if not dataclasses.is_dataclass(cls):
        return out
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        if hint is bool or (_is(hint, bool) and not _is(hint, str)):
            out.add(f"--{prefix}{f.name}")
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
            out |= bool_options(hint, f"{prefix}{f.name}.")
    return out


def _bare_flags(argv: list[str], flags: set[str]) -> list[str]:
    """``--json`` alone means ``--json true``."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        following = argv[i + 1].lower() if i + 1 < len(argv) else None
        if arg in flags and following not in BOOL_WORDS:
            out.append("true")
    return out


def _aliases(argv: list[str], aliases: Mapping[str, str], prog: str) -> list[str]:
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name in aliases:
            log.warning("%s: %s is deprecated; use %s", prog, name, aliases[name])
            arg = aliases[name] + eq + value
        out.append(arg)
    return out


def _positionals(argv: list[str], cls: type, names: Sequence[str], prog: str) -> list[str]:
    """Arguments that are neither an option nor an option's value become ``--NAME VALUE``."""
    options, free, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and arg != "-":
            takes_value = "=" not in arg and arg not in NO_VALUE and i + 1 < len(argv)
            options += argv[i : i + 1 + takes_value]
            i += 1 + takes_value
        else:
            free.append(arg)
            i += 1
    hints = _hints(cls)
    for name in names:
        if not free:
            break
        if _is(hints.get(name), list):
            options += [f"--{name}", json.dumps(free)]
            free = []
        else:
            options += [f"--{name}", free.pop(0)]
    if free:
        raise ProbingError(f"{prog}: unexpected argument(s) {free}; see `{prog} --help`")
    return options


def parse_config(
    cls: type[T],
    argv: Sequence[str],
    prog: str,
    description: str,
    *,
    positional: Sequence[str] = (),
    aliases: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    sub_configs: bool = True,
) -> T:
    """``argv`` (config files and overrides) → an instance of the dataclass ``cls``.

    ``positional``: fields that may be given without their flag, in this order; ``aliases``: deprecated
    option → current option; ``defaults``: dotted defaults other than the dataclass's own;
    ``sub_configs``: as for :func:`build_parser`.
    """
    parser = build_parser(cls, prog, description, defaults, sub_configs)
    args = _aliases(list(argv), aliases or {}, prog)
    args = _bare_flags(args, bool_options(cls))
    if positional:
        args = _positionals(args, cls, positional, prog)
    ns = parser.parse_args(args)
    ns.pop("config", None)
    init = parser.instantiate_classes(ns)
    return init if isinstance(init, cls) else cls(**init.as_dict())


def load_config(cls: type[T], path: str | Path, prog: str = "probing") -> T:
    """The dataclass ``cls`` from a YAML config file (for library callers such as the demo)."""
    return parse_config(cls, ["--config", str(path)], prog, cls.__doc__ or "")
