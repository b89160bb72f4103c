"""Explicit per-architecture lookup of decoder layers, final norm and unembedding.

No guessing: an architecture that is not listed raises, naming the ones that are (a heuristic that
misses e.g. Llama's RMSNorm silently produces a wrong logit lens).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from probing.errors import ProbingError
from probing.models.lens_matmul import lens_matmul

LENS_CANDIDATES = 27  # rescored candidates beyond k


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


class _StopForward(Exception):
    """Raised by a capture hook at the deepest wanted layer; caught by :meth:`ModelParts.capture`."""


def _get(module: nn.Module, path: str) -> nn.Module:
    obj = module
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class ModelParts:
    """The pieces of a causal LM that extraction, the logit lens and grafting need.

    It owns the layer convention for hooks: layer 0 is the embedding output (the input of decoder
    block 0), layer ``i`` the output of decoder block ``i - 1``, and the last layer the final norm's
    output (as in HF ``output_hidden_states``, whose last entry is after the norm). :meth:`capture`
    and :meth:`replace` are the only places that map a layer index to a hooked module.
    """

    architecture: str
    backbone: nn.Module
    layers: nn.ModuleList
    final_norm: nn.Module
    unembed: nn.Module
    logit_softcap: float | None = None
    _weight_bf16: torch.Tensor | None = field(default=None, repr=False)

    @property
    def num_decoder_layers(self) -> int:
        return len(self.layers)

    @property
    def num_layers(self) -> int:
        """Stored layers: embeddings (0) plus one per decoder block."""
        return len(self.layers) + 1

    # -- hooks at a layer ------------------------------------------------------------------------------
    @contextmanager
    def capture(
        self,
        layers: Iterable[int],
        fn: Callable[[int, torch.Tensor], None],
        stop: bool = False,
    ) -> Iterator[None]:
        """Within the block, forward passes call ``fn(layer, hidden)`` (``hidden`` ``[B, T, D]``) for
        each of ``layers``, shallowest first.

        ``stop`` ends a forward pass once the deepest of ``layers`` is captured, so later blocks never
        run: the model call inside the block is abandoned there (statements after it in the block do
        not run) and the block exits normally. Hooks are removed on exit.
        """
        want = sorted(set(layers))
        if not want:
            raise ValueError("capture needs at least one layer")
        deepest = want[-1]

        def observer(layer: int) -> Callable[[torch.Tensor], None]:
            def observe(hidden: torch.Tensor) -> None:
                fn(layer, hidden)
                if stop and layer == deepest:
                    raise _StopForward

            return observe

        handles: list[RemovableHandle] = []
        try:
            for layer in want:
                handles.append(self._hook(layer, observer(layer)))
            yield
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def replace(
        self, layer: int, fn: Callable[[torch.Tensor], torch.Tensor | None]
    ) -> Iterator[None]:
        """Within the block, forward passes continue from ``fn(hidden)`` (``[B, T, D]``) instead of the
        state at ``layer`` (``None`` keeps it). The hook is prepended, so other hooks on the same
        module (a capture, ``output_hidden_states``) see the replaced state; removed on exit."""
        handle = self._hook(layer, fn, prepend=True)
        try:
            yield
        finally:
            handle.remove()

    def _hook(
        self,
        layer: int,
        fn: Callable[[torch.Tensor], torch.Tensor | None],
        prepend: bool = False,
    ) -> RemovableHandle:
        """The one mapping from a layer index to a hook; ``fn`` may return a replacement state."""
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} is out of range 0..{self.num_layers - 1}")
        if layer == 0:  # the embeddings: the input of the first block

            def pre_hook(module, args, kwargs):
                new = fn(args[0] if args else kwargs["hidden_states"])
                if new is None:
                    return None
                if args:
                    return (new, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": new}

            return self.layers[0].register_forward_pre_hook(
                pre_hook, with_kwargs=True, prepend=prepend
            )

        def post_hook(module, args, output):
            new = fn(output[0] if isinstance(output, tuple) else output)
            if new is None or not isinstance(output, tuple):
                return new
            return (new, *output[1:])

        # the last layer is stored after the final norm
        module = self.layers[layer - 1] if layer < self.num_decoder_layers else self.final_norm
        return module.register_forward_hook(post_hook, prepend=prepend)

    # -- logit lens ------------------------------------------------------------------------------------
    def lens(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """Logit lens of hidden states ``[..., D]`` at ``layer`` (0 = embeddings), float32.

        The last layer's stored state is already after the final norm (HF convention), so it is
        not normalised again.
        """
        return self._cap(self.unembed(self._lens_input(hidden, layer)).float())

    def _lens_input(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        # contiguous: the CPU's bfloat16 matmul is ~300x slower on a strided view (a slice of the
        # stacked layers; BENCHMARKS.md, "The prompt pass's last logits")
        return self._normed(hidden, layer).contiguous()

    def lens_topk(
        self, hidden: torch.Tensor, layer: int, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` (ids, logits) of the logit lens of ``hidden`` ``[..., D]`` at ``layer``.

        On CPU with a float32 model, where the CPU multiplies bfloat16 fast (AVX512-BF16, AMX; see
        :mod:`probing.models.lens_matmul`, ``PROBING_LENS_MATMUL`` forces a path), candidates come from
        a bfloat16 matmul (3.6x faster than float32 on this project's AVX512-BF16 CPU, 3-4.6x slower
        on AVX2) and the best ``k + LENS_CANDIDATES`` of them are rescored exactly in float32, so
        returned logits are exact and ids differ from a float32 top-k only for near-ties below
        bfloat16 resolution. Elsewhere it is one float32 (or the model's dtype) matmul.
        """
        x = self._lens_input(hidden, layer)
        weight = self.unembed.weight
        if not (
            weight.device.type == "cpu"
            and weight.dtype == torch.float32
            and lens_matmul().path == "bfloat16"
        ):
            top = self._cap(self.unembed(x).float()).topk(k, dim=-1)
            return top.indices, top.values
        shape = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1]).float()
        if self._weight_bf16 is None or self._weight_bf16.shape != weight.shape:
            self._weight_bf16 = weight.detach().bfloat16()
        n_cand = min(weight.shape[0], k + LENS_CANDIDATES)
        cand = (x.bfloat16() @ self._weight_bf16.T).topk(n_cand, dim=-1).indices  # [R, C]
        exact = torch.einsum("rd,rcd->rc", x, weight[cand])
        bias = getattr(self.unembed, "bias", None)
        if bias is not None:
            exact = exact + bias[cand]
        top = self._cap(exact).topk(k, dim=-1)
        ids = cand.gather(-1, top.indices)
        return ids.reshape(*shape, k), top.values.reshape(*shape, k)

    def _normed(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        return self.final_norm(hidden) if layer < self.num_decoder_layers else hidden

    def _cap(self, logits: torch.Tensor) -> torch.Tensor:
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
