"""Per-layer hidden states at selected positions for a batch, plus the logit lens on them.

Every layer is read with :meth:`ModelParts.capture` hooks that keep only the selected positions, so
memory does not grow with ``layers × sequence length``, and the unembedding is applied to those
positions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from probing.features.layout import Positions
from probing.features.prefix import SharedHead
from probing.models.batching import left_pad, pad_token_id, position_ids_from_mask
from probing.models.load import LoadedModel

Offsets = Sequence[int | None]  # per stored position: tokens before the last (0: last; None: mean)


@dataclass
class BatchOutput:
    hidden: torch.Tensor  # [B, L, P, D] float32 on CPU
    lens_ids: torch.Tensor  # [B, L, P, K] int32
    lens_logits: torch.Tensor  # [B, L, P, K] float32
    logits: torch.Tensor | None = None  # [B, V] float32 next-token logits, when asked for


def offsets_of(positions: Positions | Offsets, k: int = 1) -> list[int | None]:
    """The stored positions' offsets: given, or those of one setting (``last_k`` and ``template``:
    the last ``k`` tokens)."""
    if not isinstance(positions, str):
        return list(positions)
    if positions in ("last_k", "template"):
        if k < 1:
            raise ValueError(f"k must be >= 1 for {positions}")
        return list(range(k - 1, -1, -1))
    if positions in ("last", "mean"):
        return [0 if positions == "last" else None]
    raise ValueError(f"unknown positions {positions!r}")


class Selector:
    """Reduces hidden states ``[B, T, D]`` to the stored positions ``[B, P, D]``, in order: the
    token ``offset`` places before the last (rows are left-padded, so every row's last token is at
    ``T - 1``), or the mean over every prompt token (None; padding excluded by ``mask``).

    ``template`` keeps the instruction's last token and the template tokens after it at the offsets
    where the extraction plan found them from character offsets (rows where they lie elsewhere are
    skipped there)."""

    def __init__(self, positions: Positions | Offsets = "last", k: int = 1):
        self.offsets = offsets_of(positions, k)
        tokens = [o for o in self.offsets if o is not None]
        if any(o < 0 for o in tokens) or not self.offsets:
            raise ValueError(f"offsets must be >= 0 (None: mean), got {self.offsets}")
        # the common case, a run of last tokens oldest first: one slice
        n = len(self.offsets)
        self.tail = n if self.offsets == list(range(n - 1, -1, -1)) else 0
        self.mask: torch.Tensor | None = None

    def within_last(self, n: int) -> bool:
        """Whether the selected positions are all among the last ``n`` tokens of every row."""
        return None not in self.offsets and max(self.offsets) < n

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        if self.tail:
            return h[:, -self.tail :, :]
        parts = [
            self._mean(h) if o is None else h[:, h.shape[1] - 1 - o : h.shape[1] - o, :]
            for o in self.offsets
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _mean(self, h: torch.Tensor) -> torch.Tensor:
        mask = self.mask.to(h.device).unsqueeze(-1).bool()
        total = torch.where(mask, h, torch.zeros((), dtype=h.dtype, device=h.device)).sum(
            1, keepdim=True
        )
        return total / mask.sum(1, keepdim=True).clamp(min=1).to(h.dtype)


class ActivationReader:
    """Runs the decoder backbone on batches and returns selected per-layer states and their lens
    (``top_k`` 0: no lens; the lens arrays are zero-width). ``positions``: one setting (with ``k``)
    or the stored positions' offsets (:class:`Selector`)."""

    def __init__(
        self, lm: LoadedModel, positions: Positions | Offsets = "last", k: int = 1, top_k: int = 5
    ):
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        self.lm = lm
        self.parts = lm.parts
        self.selector = Selector(positions, k)
        self.top_k = top_k
        self.pad_id = pad_token_id(lm.tokenizer)
        self.head: SharedHead | None = None

    @torch.inference_mode()
    def share_prefix(self, seqs: Sequence[Sequence[int]], progress: bool = False) -> int:
        """Run the head that all of ``seqs`` (a run's prompts) start with once — a chat template's
        system turn — and continue every later batch that starts with it from its cache. Results
        are those of running each batch whole. Returns the head's length (0: nothing shared).
        ``progress``: a bar over the head's layers (one long prompt is all head)."""
        self.head = SharedHead.of(
            self.parts, seqs, self.lm.input_device, self.pad_id, progress=progress
        )
        return len(self.head.ids) if self.head is not None else 0

    @property
    def num_layers(self) -> int:
        return self.parts.num_layers

    @torch.inference_mode()
    def __call__(self, seqs: Sequence[Sequence[int]], logits: bool = False) -> BatchOutput:
        """States of every layer at the selected positions; ``logits`` adds the full next-token
        logits (last prompt token), e.g. for a KL divergence."""
        ids, mask = left_pad(seqs, self.pad_id)
        self.selector.mask = mask
        head = self.head if self.head is not None and self.head.fits(seqs) else None
        # the selected positions all lie in every row's tail: the head's states are not needed
        shortest_tail = min(map(len, seqs)) - len(head.ids) if head is not None else 0
        tail_only = self.selector.within_last(shortest_tail)
        captured: list[torch.Tensor | None] = [None] * self.num_layers
        n_blocks = self.parts.num_decoder_layers
        final: list[torch.Tensor] = []  # the last layer's state at the last token, for logits

        def keep(index: int, h: torch.Tensor) -> None:
            if head is not None and not tail_only:  # the head's states back in front, left-padded
                h = head.states(index, h)
            captured[index] = self.selector(h).detach()
            if index == n_blocks and logits:
                final.append(h[:, -1].detach())

        device = self.lm.input_device
        with self.parts.capture(range(self.num_layers), keep):
            if head is not None:
                self.parts.backbone(**head.inputs(self.parts.backbone, seqs))
            else:
                self.parts.backbone(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=position_ids_from_mask(mask).to(device),
                    use_cache=False,
                )
        result = self._finish(captured)
        if logits:
            dev = self.parts.unembed.weight.device
            result.logits = self.parts.lens(final[-1].to(dev), n_blocks).cpu()
        return result

    def _finish(self, captured: list[torch.Tensor | None]) -> BatchOutput:
        dev = self.parts.unembed.weight.device
        stacked = torch.stack([c.to(dev) for c in captured], dim=1)  # [B, L, P, D]
        if self.top_k == 0:  # lens off: zero-width lens arrays
            empty = stacked.new_zeros((*stacked.shape[:-1], 0), dtype=torch.int32).cpu()
            return BatchOutput(stacked.float().cpu(), empty, empty.float())
        inner = self.parts.lens_topk(stacked[:, :-1], 0, self.top_k)  # every layer but the last
        last = self.parts.lens_topk(stacked[:, -1:], self.parts.num_decoder_layers, self.top_k)
        ids = torch.cat([inner[0], last[0]], dim=1)
        values = torch.cat([inner[1], last[1]], dim=1)
        return BatchOutput(
            hidden=stacked.float().cpu(),
            lens_ids=ids.to(torch.int32).cpu(),
            lens_logits=values.float().cpu(),
        )
