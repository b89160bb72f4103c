"""A package's names imported on first use, so that its light submodules (a command's options, read
by ``--help``) can be imported without the heavy ones (torch, Lightning, h5py)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_names(
    package: str, homes: Mapping[str, Sequence[str]]
) -> tuple[list[str], Callable[[str], Any]]:
    """``homes``: submodule of ``package`` -> the names it provides. Returns the package's
    ``__all__`` and its module ``__getattr__`` (PEP 562), which imports a name's home on first use."""
    where = {name: sub for sub, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return sorted(where), __getattr__
