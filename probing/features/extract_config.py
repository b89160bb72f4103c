"""What `probing extract` reads and writes: its options, parsed without torch (``--help`` stays fast)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from probing.config import parse_config
from probing.features.layout import PositionName, Positions
from probing.models.config import ModelConfig
from probing.prompts.render import Template
from probing.prompts.sources import PromptSource

DESCRIPTION = (
    "Extract per-layer hidden states and logit-lens top-k of prompts into an HDF5 feature file."
)


@dataclass
class ExtractConfig:
    """What to extract and where to write it.

    Args:
        model: the model to read activations from.
        prompts: labelled prompt sources, in order.
        output: the HDF5 feature file to write.
        template: ``chat`` (the tokenizer's chat template with the generation prompt), ``raw`` text, or
            ``auto`` (chat when the tokenizer has a template).
        system_prompt: system message for ``chat`` (default: none, or whatever the template adds).
        positions: ``last`` prompt token, ``mean`` over prompt tokens, the ``last_k`` tokens,
            ``template``: the last token of the user's instruction (``inst``) and every chat-template
            token after it (``post_1 … post_m``; ``post_m`` is ``last``), found from character
            offsets; or a list of these and ``inst``, e.g. ``[inst, last, mean]``: all of them from
            one forward pass; see docs/positions.md.
        k: number of positions for ``last_k``.
        lens_top_k: logit-lens tokens kept per layer and position; 0 stores no lens (the states only,
            for probes and monitors; 12-19 % less time on the embedded default; `probing lens` cannot
            read the file).
        batch_size: prompts per forward pass (batches are length-sorted, left-padded).
        max_tokens: longest rendered prompt allowed (default: the model's context length).
        too_long: ``skip`` prompts longer than ``max_tokens`` (counted in the file), or ``truncate``
            them from the left with a warning.
        storage_dtype: ``float16`` (half the size; values beyond ±65504 stop the run) or ``float32``.
        resume: continue an interrupted run of the same config.
        overwrite: replace an existing file of another model, prompt set or config.
        progress: show a progress bar.
        shard: extract only slice ``i`` of ``n`` (``"i/n"``) into ``OUTPUT.shardIII-of-NNN.h5``; under
            torchrun the rank and world size are used. The shard that finds all shards complete merges
            them into ``output`` (see ``probing merge``).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    prompts: list[PromptSource] = field(default_factory=list)
    output: str = "features/features.h5"
    template: Template = "auto"
    system_prompt: str | None = None
    positions: Positions | list[PositionName] = "last"
    k: int = 4
    lens_top_k: int = 5
    batch_size: int = 16
    max_tokens: int | None = None
    too_long: Literal["skip", "truncate"] = "skip"
    storage_dtype: Literal["float16", "float32"] = "float16"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    shard: str | None = None


def parse(argv: Sequence[str]) -> ExtractConfig:
    return parse_config(ExtractConfig, argv, "probing extract", DESCRIPTION)
