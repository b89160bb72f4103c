"""Stage 1c: greedy continuations and the refusal judge (is the model aligned enough to study?).

The names are imported on first use, so that a light submodule (``probing.generation.refusal_config``,
read by ``--help``) does not import torch. ``probing.generation.generate`` is the module (its function
``generate`` is ``probing.generation.generate.generate``).
"""

from typing import Any

__all__ = ["Generation", "KeywordJudge", "Verdict", "load_judge", "stop_token_ids"]


def __getattr__(name: str) -> Any:
    if name in {"KeywordJudge", "Verdict", "load_judge"}:
        from probing.generation import judge

        return getattr(judge, name)
    if name in {"Generation", "stop_token_ids"}:
        from probing.generation import generate

        return getattr(generate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
