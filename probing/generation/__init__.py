"""Stage 1c: greedy continuations and the refusal judge (is the model aligned enough to study?).

The names are imported on first use, so that a light submodule (``probing.generation.refusal_config``,
read by ``--help``) does not import torch. ``probing.generation.generate`` is the module (its function
``generate`` is ``probing.generation.generate.generate``).
"""

from probing.lazy import lazy_names

__all__, __getattr__ = lazy_names(
    __name__,
    {
        "judge": ["KeywordJudge", "Verdict", "load_judge"],
        "generate": ["Generation", "stop_token_ids"],
    },
)
