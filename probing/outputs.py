"""Can a command's output be written? Checked before any model loads, so that a typo in ``--output``
costs no model load (and no hour of generation before the write fails)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from probing.errors import ProbingError


def _nearest_folder(out: Path, option: str) -> None:
    """The deepest existing folder above ``out`` is a folder we may write into."""
    folder = next(p for p in out.absolute().parents if p.exists())
    if not folder.is_dir():
        raise ProbingError(
            f"{option} {out}: {folder} is a file, not a folder; choose another {option}"
        )
    if not os.access(folder, os.W_OK):
        raise ProbingError(
            f"cannot write {option} {out} (permission denied); choose another {option}"
        )


def check_output_file(
    path: str | os.PathLike,
    option: str = "--output",
    example: str = "out.jsonl",
    existing: bool = True,
) -> None:
    """``path`` is a file that can be written (its folders are made when it is written); with
    ``existing``, an existing file must be writable too (``False``: the command may only read it)."""
    out = Path(path)
    if out.is_dir():
        raise ProbingError(f"{option} {out} is a folder; give a file name, e.g. {out / example}")
    _nearest_folder(out, option)
    if existing and out.exists() and not os.access(out, os.W_OK):
        raise ProbingError(
            f"cannot write {option} {out} (permission denied); choose another {option}"
        )


def check_output_folder(path: str | os.PathLike, option: str = "--output") -> None:
    """``path`` is a folder that exists or can be made, and can be written into."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ProbingError(f"{option} {out} is a file, not a folder; choose another {option}")
    if out.is_dir():
        if not os.access(out, os.W_OK):
            raise ProbingError(
                f"cannot write into {option} {out} (permission denied); choose another {option}"
            )
        return
    _nearest_folder(out, option)


def echo(cfg: object, text: str) -> None:
    """A command's text result (``probing info``, ``probing cache``) to standard output."""
    sys.stdout.write(text + "\n")
