"""Compare models and prompt formats: the paper's per-layer accuracy grid across runs.

``compare`` is imported on first use, so that ``probing.compare.spec`` (read by ``--help``) does not
import torch.
"""

from typing import Any

__all__ = ["CompareConfig", "CompareResult", "RunResult", "RunSpec", "compare"]


def __getattr__(name: str) -> Any:
    if name == "compare":
        from probing.compare import run

        return run.compare
    if name in __all__:
        from probing.compare import spec

        return getattr(spec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
