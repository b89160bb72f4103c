"""What `probing refusal` does: its options, parsed without torch (``--help`` stays fast)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from probing.config import parse_config
from probing.models.config import ModelConfig
from probing.prompts.render import Template
from probing.prompts.sources import PromptSource


@dataclass
class RefusalConfig:
    """Which model, which prompts, how long to generate, where to write.

    Args:
        model: the model to evaluate.
        prompts: labelled prompt sources (e.g. ``[{path: malicious}, {path: normal}]``).
        output: folder for ``refusal.csv`` and ``refusal_summary.json``.
        template: ``chat``, ``raw`` or ``auto`` (chat when the tokenizer has a template).
        system_prompt: system message for ``chat`` (default: none, or whatever the template adds).
        max_new_tokens: greedy tokens generated per prompt.
        batch_size: prompts per prefill batch (length-sorted, left-padded).
        decode_rows: prompts decoded together (their prefill batches' KV caches joined; a prompt
            that reaches a stop token leaves the batch).
        judge: keyword file of the judge (default: configs/judge/keywords.yaml).
        progress: show a progress bar.
        features: a feature file of the same model, template and prompts: the verdicts join it as
            the label set ``refused`` (dataset ``label_refused``: 1 refused, 0 complied, -1
            unclear), for ``probing fit --data.label refused`` (docs/directions.md).
        verdicts: join this earlier run's verdicts (its ``--output`` folder) to ``--features``
            instead of generating: no model is loaded.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    prompts: list[PromptSource] = field(default_factory=list)
    output: str = "runs/refusal"
    template: Template = "auto"
    system_prompt: str | None = None
    max_new_tokens: int = 20
    batch_size: int = 8
    decode_rows: int = 64
    judge: str | None = None
    progress: bool = True
    features: str | None = None
    verdicts: str | None = None


def parse(argv: Sequence[str]) -> RefusalConfig:
    return parse_config(
        RefusalConfig,
        argv,
        "probing refusal",
        "Greedy continuations of labelled prompts and the keyword judge's refusal rate per class.",
    )
