"""What `probing lens` does: its options, parsed without matplotlib (``--help`` stays fast)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from probing.config import parse_config
from probing.layers import LayerSpec
from probing.models.config import ModelOverride

DESCRIPTION = (
    "Logit-lens analysis of a feature file's stored top-K: the most frequent tokens per layer and "
    "class, their emotion, and the Top-K Intermediate Consistency (docs/lens.md). Writes "
    "lens_consistency.csv, lens_top_tokens.csv, consistency.png, emotion_mass.png, "
    "lens_heatmap_<class>.png and lens_summary.md into --output."
)


@dataclass
class LensConfig:
    """Logit-lens analysis of a feature file.

    Args:
        features: feature file (``.h5``) with lens data; may be given without ``--features``.
        output: folder for the results.
        emotions: emotion token lists (default ``configs/emotion/default.yaml``).
        top: most frequent tokens kept per layer and class.
        classes: classes to analyse (default all).
        layers: layers shown in the heatmaps (default all) and the summary's token tables (default 5
            evenly spaced): ``all``, an index, a list or ``"start:stop[:step]"``; CSVs always hold
            every layer.
        position: stored position to read: an index (-1 = the last stored) or a name the file
            records (``inst``, ``post_1``, … of ``--positions template``; docs/positions.md).
        model: the model whose tokenizer decodes the ids: ``--model.name`` a name or folder (default:
            the file's model), ``--model.trust_remote_code``; the old ``--tokenizer NAME`` still
            works, with a warning. No model is loaded, only its tokenizer.
    """

    features: str
    output: str
    emotions: str | None = None
    top: int = 10
    classes: list[str] | None = None
    layers: LayerSpec | None = None
    position: int | str = -1
    model: ModelOverride = field(default_factory=ModelOverride)


ALIASES = {"--tokenizer": "--model.name"}  # deprecated option -> current option


def parse(argv: Sequence[str]) -> LensConfig:
    return parse_config(
        LensConfig, argv, "probing lens", DESCRIPTION, positional=("features",), aliases=ALIASES
    )
