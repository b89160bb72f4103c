"""Where the built-in data lives: the prompt sets (``datasets/``) and the configs (``configs/``).

Both are top-level folders of the repository. A wheel ships them as package data in
``probing/_data/`` (``setup.py``'s build step copies them there); in a source checkout or an editable
install (``pip install -e .``) they are read from the checkout itself.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from probing.errors import ProbingError

PACKAGED = "_data"  # probing/_data/{datasets,configs} inside an installed wheel
FOLDERS = ("datasets", "configs")


def builtin_path(folder: str, *parts: str) -> Path:
    """``folder`` (``datasets`` or ``configs``), or a file in it, of this installation."""
    if folder not in FOLDERS:
        raise ValueError(f"unknown built-in folder {folder!r}; one of {FOLDERS}")
    package = Path(str(files("probing")))
    packaged = package / PACKAGED / folder
    if packaged.is_dir():
        return packaged.joinpath(*parts)
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / folder).is_dir():
        return (checkout / folder).joinpath(*parts)
    raise ProbingError(
        f"this probing installation ({package}) has no built-in {folder}/; reinstall it from a "
        "wheel built by `pip wheel .` or install the checkout with `pip install -e .`"
    )
