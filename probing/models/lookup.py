"""Explicit per-architecture lookup of decoder layers, final norm and unembedding.

No guessing: an architecture that is not listed raises, naming the ones that are (a heuristic that
misses e.g. Llama's RMSNorm silently produces a wrong logit lens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from probing.errors import ProbingError


@dataclass(frozen=True)
class ArchSpec:
    """Dotted attribute paths from the ``*ForCausalLM`` module."""

    backbone: str
    layers: str
    final_norm: str
    unembed: str = "lm_head"


_LLAMA_LIKE = ArchSpec("model", "model.layers", "model.norm")
_GPT_LIKE = ArchSpec("transformer", "transformer.h", "transformer.ln_f")

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "mixtral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "phi3": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "phi": ArchSpec("model", "model.layers", "model.final_layernorm"),
    "gpt2": _GPT_LIKE,
    "falcon": _GPT_LIKE,
}


def _get(module: nn.Module, path: str) -> nn.Module:
    obj = module
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class ModelParts:
    """The pieces of a causal LM that extraction, the logit lens and grafting need."""

    architecture: str
    backbone: nn.Module
    layers: nn.ModuleList
    final_norm: nn.Module
    unembed: nn.Module
    logit_softcap: float | None = None

    @property
    def num_decoder_layers(self) -> int:
        return len(self.layers)

    @property
    def num_layers(self) -> int:
        """Stored layers: embeddings (0) plus one per decoder block."""
        return len(self.layers) + 1

    def lens(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """Logit lens of hidden states ``[..., D]`` at ``layer`` (0 = embeddings).

        The last layer's stored state is already after the final norm (HF convention), so it is
        not normalised again.
        """
        if layer < self.num_decoder_layers:
            hidden = self.final_norm(hidden)
        logits = self.unembed(hidden).float()
        if self.logit_softcap:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits


def model_parts(model: nn.Module) -> ModelParts:
    """Find layers, final norm and unembedding of ``model`` through :data:`ARCHITECTURES`."""
    arch = getattr(getattr(model, "config", None), "model_type", None)
    spec = ARCHITECTURES.get(arch or "")
    if spec is None:
        raise ProbingError(
            f"unsupported architecture {arch!r} ({type(model).__name__}); supported: "
            f"{', '.join(sorted(ARCHITECTURES))}. Add an entry to probing.models.lookup.ARCHITECTURES "
            "or choose another --model.name"
        )
    try:
        parts = ModelParts(
            architecture=arch,
            backbone=_get(model, spec.backbone),
            layers=_get(model, spec.layers),
            final_norm=_get(model, spec.final_norm),
            unembed=_get(model, spec.unembed),
            logit_softcap=getattr(model.config, "final_logit_softcapping", None),
        )
    except AttributeError as err:
        raise ProbingError(
            f"{type(model).__name__} (model_type {arch!r}) does not have the modules the lookup expects "
            f"({spec}): {err}; load it with AutoModelForCausalLM"
        ) from None
    if not isinstance(parts.layers, nn.ModuleList):
        raise ProbingError(f"{spec.layers} of {type(model).__name__} is not a ModuleList")
    return parts
