"""Screen prompts with a trained probe before the model generates: stop the forward at the probe's layer.

A :class:`Screener` renders prompts exactly as the probe's training features were rendered (the
feature file's ``template`` and ``system_prompt``), runs the decoder on left-padded batches with
position ids from the attention mask, captures the probed position at layer ``L`` with
:meth:`ModelParts.capture` (the project's layer convention) and stops the forward there, so the
blocks after ``L`` never run. The probe checkpoint's own standardisation
(``input_mean``/``input_std``) is applied to the raw state, then its head for that layer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from probing.errors import ProbingError
from probing.features.activations import Selector
from probing.features.positions import position_offsets
from probing.models.batching import left_pad, pad_token_id, position_ids_from_mask
from probing.models.load import LoadedModel
from probing.monitor.calibrate import Scorer
from probing.monitor.config import DEFAULT_REFUSAL
from probing.monitor.probe import LoadedProbe, check_model
from probing.progress import progress_bar
from probing.prompts.render import render

log = logging.getLogger(__name__)


# -- screening ---------------------------------------------------------------------------------------
@dataclass
class Screening:
    """The monitor's decision on one prompt."""

    prompt: str
    probs: dict[str, float]
    score: float
    flagged: bool
    layer: int
    threshold: float | None

    @property
    def decision(self) -> str:
        return "flag" if self.flagged else "allow"

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "probs": self.probs,
            "score": self.score,
            "decision": self.decision,
            "flagged": self.flagged,
            "layer": self.layer,
            "threshold": self.threshold,
        }


class Screener:
    """Scores prompts with one probed layer of ``probe`` on the live model ``lm``.

    Args:
        lm: the model whose features the probe was trained on (checked).
        probe: a loaded probe checkpoint.
        layer: the layer to screen at (an index the probe covers).
        threshold: flag when the score is at least this (None: never flag, scores only).
        scorer: how probabilities become a score (default: p(malicious) / 1 - p(normal)).
        batch_size: prompts per forward pass.
        progress: progress bars (prompts screened, and generated for ``guarded_generate``).
    """

    def __init__(
        self,
        lm: LoadedModel,
        probe: LoadedProbe,
        layer: int,
        threshold: float | None = None,
        scorer: Scorer | None = None,
        batch_size: int = 8,
        progress: bool = False,
    ):
        check_model(probe, lm)
        if batch_size < 1:
            raise ProbingError(f"--batch_size must be >= 1, got {batch_size}")
        self.lm, self.probe, self.layer = lm, probe, layer
        self.column = probe.column(layer)
        self.threshold = threshold
        self.scorer = scorer or Scorer(tuple(probe.class_names))
        self.batch_size, self.progress = batch_size, progress
        meta = probe.feature_meta
        self.template = meta.get("template") or "auto"
        self.system_prompt = meta.get("system_prompt") or None
        # only the probed position: its offset from the last token, or the mean
        self.selector = Selector([position_offsets(meta)[probe.position]])
        self.pad_id = pad_token_id(lm.tokenizer)
        cfg = lm.model.config
        self.max_tokens = next(
            (
                v
                for v in (
                    getattr(cfg, "max_position_embeddings", None),
                    getattr(cfg, "n_positions", None),
                )
                if isinstance(v, int) and v > 0
            ),
            None,
        )

    # -- tokens --------------------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of ``prompts`` rendered as in training; empty prompts are refused."""
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ProbingError(
                    f"prompt {i + 1} of {len(prompts)} is empty; the monitor screens non-empty prompts"
                )
        ids = render(self.lm.tokenizer, list(prompts), self.template, self.system_prompt).ids
        limit = self.max_tokens
        if limit and any(len(s) > limit for s in ids):
            log.warning("keeping the last %d tokens of prompts longer than the context", limit)
            ids = [s[-limit:] for s in ids]
        return ids

    # -- hidden states ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def hidden(self, seqs: Sequence[Sequence[int]], layers: Sequence[int]) -> torch.Tensor:
        """Raw states ``[B, len(layers), D]`` (float32, CPU) at the probed position of one batch; the
        forward stops after the deepest layer in ``layers``."""
        want = sorted(set(layers))
        ids, mask = left_pad(seqs, self.pad_id)
        self.selector.mask = mask
        captured: dict[int, torch.Tensor] = {}

        def keep(index: int, h: torch.Tensor) -> None:
            captured[index] = self.selector(h)[:, 0].detach()

        device = self.lm.input_device
        with self.lm.parts.capture(want, keep, stop=True):
            self.lm.parts.backbone(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=position_ids_from_mask(mask).to(device),
                use_cache=False,
            )
        missing = [i for i in want if i not in captured]
        if missing:
            raise RuntimeError(f"the forward did not reach layers {missing}")
        return torch.stack([captured[i].float().cpu() for i in layers], dim=1)

    def probabilities(
        self, prompts: Sequence[str], layers: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Class probabilities ``[N, len(layers), C]`` (default: the screening layer), input order."""
        layers = [self.layer] if layers is None else list(layers)
        cols = [self.probe.column(i) for i in layers]
        seqs = self.encode(prompts)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        n, d = len(self.probe.layers), self.probe.hidden_size
        out = torch.empty(len(seqs), len(layers), len(self.probe.class_names))
        with progress_bar(len(seqs), "screen", "prompt", self.progress) as bar:
            for lo in range(0, len(order), self.batch_size):
                rows = order[lo : lo + self.batch_size]
                h = self.hidden([seqs[i] for i in rows], layers)
                x = torch.zeros(len(rows), n, d)
                x[:, cols] = h
                out[rows] = self.probe.probs(x)[:, cols]
                bar.update(len(rows))
        return out

    def screen(self, prompts: Sequence[str]) -> list[Screening]:
        """Probabilities, score and decision for each prompt (input order)."""
        probs = self.probabilities(prompts)[:, 0]
        scores = self.scorer(probs)
        out = []
        for prompt, p, s in zip(prompts, probs.tolist(), scores.tolist(), strict=True):
            out.append(
                Screening(
                    prompt=prompt,
                    probs=dict(zip(self.probe.class_names, p, strict=True)),
                    score=float(s),
                    flagged=self.threshold is not None and s >= self.threshold,
                    layer=self.layer,
                    threshold=self.threshold,
                )
            )
        return out

    def __call__(self, prompt: str) -> Screening:
        return self.screen([prompt])[0]


# -- guarded generation -------------------------------------------------------------------------------
@dataclass
class Guarded:
    """A screened prompt and what the model (or the monitor) answered."""

    screening: Screening
    response: str
    generated: bool

    def as_dict(self) -> dict[str, Any]:
        return {**self.screening.as_dict(), "response": self.response, "generated": self.generated}


def guarded_generate(
    screener: Screener,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    refusal: str = DEFAULT_REFUSAL,
) -> list[Guarded]:
    """Screen first; generate (greedy) only for allowed prompts, answer ``refusal`` to flagged ones.

    Every decision is logged (logger ``probing.monitor.screen``, level INFO).
    """
    from probing.generation.generate import generate

    if screener.threshold is None:
        raise ProbingError("guarded generation needs a threshold (--threshold or --fpr)")
    screenings = screener.screen(prompts)
    allowed = [i for i, s in enumerate(screenings) if not s.flagged]
    texts: dict[int, str] = {}
    if allowed:
        seqs = screener.encode([prompts[i] for i in allowed])
        gen = generate(
            screener.lm, seqs, max_new_tokens, screener.batch_size, progress=screener.progress
        )
        texts = dict(zip(allowed, gen.text, strict=True))
    out = []
    for i, s in enumerate(screenings):
        log.info(
            "monitor: %s prompt %d (score %.4f %s threshold %.4f at layer %d)",
            "refused" if s.flagged else "allowed",
            i,
            s.score,
            ">=" if s.flagged else "<",
            s.threshold,
            s.layer,
        )
        out.append(Guarded(s, refusal if s.flagged else texts[i], not s.flagged))
    return out
