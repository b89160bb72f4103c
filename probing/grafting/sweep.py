"""Grafting sweep: graft a donor state (e.g. the normal-class mean) into target prompts at each layer.

Per layer and prompt: KL divergence of the next-token distribution from the ungrafted one, the top-k
next tokens and the first token's emotion, a greedy continuation judged refusal/compliance, and the
trained probes' predictions on the layers after the graft. Summaries per layer are compared with the
ungrafted targets and with real jailbreak prompts (ungrafted).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from probing.errors import ProbingError
from probing.generation.generate import (
    Prefilled,
    greedy_continue,
    prefill_batches,
    stop_token_ids,
)
from probing.generation.judge import KeywordJudge
from probing.grafting.hooks import check_graft, graft
from probing.models.batching import cache_arg_name, cache_of, last_logits
from probing.models.load import LoadedModel
from probing.models.lookup import ModelParts
from probing.progress import progress_bar

log = logging.getLogger(__name__)
TRUNCATE = 60  # characters of a continuation kept in reports (never store whole answers)

EmotionFn = Callable[[str], str]  # token string -> "negative" | "positive" | "neutral"


@dataclass
class SweepResult:
    rows: list[dict[str, Any]] = field(default_factory=list)  # per prompt and condition
    summary: list[dict[str, Any]] = field(default_factory=list)  # per condition


def _emotion_first(tokenizer: Any, ids: list[int], emotion: EmotionFn) -> str:
    return emotion(tokenizer.convert_ids_to_tokens(ids[0])) if ids else "neutral"


def _probe_positive(
    probe: Any, hidden: torch.Tensor, after: int, positive: int
) -> np.ndarray | None:
    """Per prompt: share of the probe's layers after ``after`` that predict the positive class."""
    if probe is None:
        return None
    layers = [i for i, layer in enumerate(probe.layers) if layer > after]
    if not layers:
        return np.full(hidden.shape[0], np.nan)
    with torch.no_grad():
        logits = next(iter(probe.raw_logits(hidden[:, probe.layers].to(probe.device)).values()))
    pred = logits[:, layers].argmax(-1).cpu().numpy()
    return (pred == positive).mean(1)


Graft = tuple[
    int | None, torch.Tensor | None
]  # (layer, donor [D] or [N, D]); (None, None): ungrafted


def _for_rows(g: Graft, rows: Sequence[int]) -> Graft:
    """A graft restricted to some prompts: paired donors ``[N, D]`` keep those prompts' rows."""
    layer, donor = g
    if donor is None or donor.ndim == 1:
        return g
    return layer, donor[list(rows)]


@dataclass
class Outcome:
    """One condition over a list of prompts, in their order."""

    hidden: torch.Tensor  # [N, L, D] states of the last prompt token, every layer
    logits: torch.Tensor  # [N, V] next-token logits
    texts: list[str]  # greedy continuations
    first_ids: list[list[int]]  # first new token (empty if the model stopped at once)


@contextmanager
def capture_last_states(parts: ModelParts) -> Iterator[list[torch.Tensor | None]]:
    """Every layer's state at the last position of the next forward pass, as a feature file stores
    it (0 = embeddings, the last after the final norm). Registered after any graft's hooks (those
    are prepended), so a grafted state is seen as grafted."""
    captured: list[torch.Tensor | None] = [None] * parts.num_layers

    def keep(index: int, h: torch.Tensor) -> None:
        if captured[index] is None:
            captured[index] = h[:, -1].detach().float().cpu()

    with parts.capture(range(parts.num_layers), keep):
        yield captured


class GraftSweep:
    """Runs conditions (ungrafted, grafted at each layer) over batches of token sequences.

    The graft replaces one prompt token's state — the ``tail``-th from the end (1: the last) — so
    everything before that token is the same in every condition: each prompt batch's prefix (all
    tokens before the tail) runs once, its KV cache is repeated for the conditions, and the tail of
    every condition runs in one forward pass (each condition's graft on its own rows), followed by
    greedy decoding of all of them together.
    ``batch_size`` prompts are prefilled per pass (length-sorted), and up to ``rows_per_pass``
    prompt × condition rows decode together.
    """

    def __init__(
        self,
        lm: LoadedModel,
        judge: KeywordJudge,
        emotion: EmotionFn,
        max_new_tokens: int = 20,
        batch_size: int = 8,
        top_k: int = 5,
        probe: Any = None,
        positive_class: int = 1,
        rows_per_pass: int = 64,
        progress: bool = False,
    ):
        if batch_size < 1 or rows_per_pass < 1:
            raise ProbingError(
                f"--batch_size and --rows_per_pass must be >= 1, got {batch_size}, {rows_per_pass}"
            )
        self.lm, self.judge, self.emotion = lm, judge, emotion
        self.max_new_tokens, self.batch_size, self.top_k = max_new_tokens, batch_size, top_k
        self.probe, self.positive = probe, positive_class
        self.rows_per_pass, self.progress = rows_per_pass, progress
        self.stop_ids = stop_token_ids(lm)

    def condition(
        self, seqs: Sequence[Sequence[int]], layer: int | None, donor: torch.Tensor | None
    ):
        """States, next-token logits, continuations and first tokens of ``seqs`` with (or without)
        a graft at ``layer``."""
        out = self.conditions(seqs, [(layer, donor)])[0]
        return out.hidden, out.logits, out.texts, out.first_ids

    def conditions(
        self,
        seqs: Sequence[Sequence[int]],
        grafts: Sequence[Graft],
        tail: int = 1,
        desc: str = "graft",
    ) -> list[Outcome]:
        """Every graft of ``grafts`` over all of ``seqs`` (one :class:`Outcome` per graft), grafted
        at the ``tail``-th token from the end. A donor ``[D]`` goes into every prompt; ``[N, D]``
        has one row per prompt of ``seqs`` (paired donors). The bar counts prompt × condition rows."""
        if tail < 1 or any(len(s) < tail for s in seqs):
            raise ProbingError(f"every grafted prompt needs at least {max(tail, 1)} token(s)")
        for layer, donor in grafts:
            if donor is not None and donor.ndim == 2 and donor.shape[0] != len(seqs):
                raise ProbingError(
                    f"{donor.shape[0]} paired donor states for {len(seqs)} prompts at layer {layer}"
                )
        n = len(seqs)
        order = sorted(range(n), key=lambda i: -len(seqs[i]))
        per_group = max(1, self.rows_per_pass // len(grafts))  # prompts decoded together
        hidden: list[list[torch.Tensor]] = [[None] * n for _ in grafts]  # type: ignore[list-item]
        logits: list[list[torch.Tensor]] = [[None] * n for _ in grafts]  # type: ignore[list-item]
        tokens: list[list[list[int]]] = [[[] for _ in range(n)] for _ in grafts]
        with progress_bar(n * len(grafts), desc, "row", self.progress) as bar:
            for lo in range(0, n, per_group):
                group = order[lo : lo + per_group]
                heads = [seqs[i][: len(seqs[i]) - tail] for i in group]
                at = 0
                for prefix in prefill_batches(self.lm, heads, self.batch_size):
                    rows = group[at : at + prefix.rows]
                    at += prefix.rows
                    per_pass = max(
                        1, self.rows_per_pass // len(rows)
                    )  # conditions decoded together
                    for g in range(0, len(grafts), per_pass):
                        chunk = list(range(g, min(g + per_pass, len(grafts))))
                        last = g + per_pass >= len(grafts)
                        cache = prefix.cache if last else copy.deepcopy(prefix.cache)
                        out = self._pass(
                            [seqs[i] for i in rows],
                            prefix,
                            cache,
                            [_for_rows(grafts[k], rows) for k in chunk],
                            tail,
                        )
                        for j, k in enumerate(chunk):
                            for r, i in enumerate(rows):
                                hidden[k][i], logits[k][i], tokens[k][i] = (
                                    out[0][r, j],
                                    out[1][r, j],
                                    out[2][r][j],
                                )
                        bar.update(len(rows) * len(chunk))
        decode = self.lm.tokenizer.decode
        return [
            Outcome(
                torch.stack(hidden[k]),
                torch.stack(logits[k]),
                [decode(t, skip_special_tokens=True) for t in tokens[k]],
                [t[:1] for t in tokens[k]],
            )
            for k in range(len(grafts))
        ]

    @torch.inference_mode()
    def _pass(
        self,
        seqs: list[Sequence[int]],
        prefix: Prefilled,
        cache: Any,
        grafts: list[Graft],
        tail: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor, list[list[list[int]]]]:
        """The last ``tail`` tokens of ``seqs`` under each graft (row ``prompt * K + graft``; the
        first of them grafted), then greedy decoding: states ``[B, K, L, D]`` of the last token,
        logits ``[B, K, V]``, new tokens ``[B][K]``."""
        k, b = len(grafts), len(seqs)
        device = self.lm.input_device
        if cache is not None and k > 1:
            cache.batch_repeat_interleave(k)
        ones = torch.ones((b * k, tail), dtype=torch.long, device=device)
        mask = torch.cat([prefix.mask.repeat_interleave(k, 0), ones], dim=1)
        steps = torch.arange(-tail, 0, device=device)
        positions = torch.tensor([len(s) for s in seqs], device=device)[:, None] + steps
        positions = positions.repeat_interleave(k, 0)
        ends = torch.tensor([list(s[len(s) - tail :]) for s in seqs], device=device)
        ends = ends.repeat_interleave(k, 0)
        kwargs = {} if cache is None else {cache_arg_name(self.lm.model): cache}
        with ExitStack() as stack:
            for j, (layer, donor) in enumerate(grafts):
                if layer is not None:
                    rows = torch.arange(j, b * k, k)
                    stack.enter_context(
                        graft(self.lm.parts, layer, donor, position=-tail, rows=rows)
                    )
            states = stack.enter_context(capture_last_states(self.lm.parts))
            out = self.lm.model(
                input_ids=ends,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=last_logits(),
                **kwargs,
            )
        logits = out.logits[:, -1]
        start = Prefilled(cache_of(out), mask, positions[:, -1:], logits)
        new, _ = greedy_continue(self.lm, start, self.max_new_tokens, self.stop_ids)
        hidden = torch.stack(states, dim=1)  # type: ignore[arg-type]
        return (
            hidden.reshape(b, k, *hidden.shape[1:]),
            logits.float().cpu().reshape(b, k, -1),
            [new[r * k : (r + 1) * k] for r in range(b)],
        )

    def run(
        self,
        targets: Sequence[Sequence[int]],
        prompts: Sequence[str],
        layers: Sequence[int],
        donors: torch.Tensor,
        jailbreaks: Sequence[Sequence[int]] = (),
        tail: int = 1,
    ) -> SweepResult:
        """``donors`` ``[L, D]`` (one state per layer), ``[D]`` (the same for all layers) or
        ``[N, L, D]`` (paired: one per target prompt and layer), grafted at the ``tail``-th token
        from the end of each prompt."""
        layer_axis = {1: None, 2: 0, 3: 1}.get(donors.ndim)
        count = self.lm.parts.num_layers
        if layer_axis is not None and donors.shape[layer_axis] != count:
            raise ProbingError(
                f"donor states cover {donors.shape[layer_axis]} layers, the model has {count}"
            )
        if donors.ndim == 3 and donors.shape[0] != len(targets):
            raise ProbingError(f"{donors.shape[0]} paired donors for {len(targets)} target prompts")
        grafts: list[Graft] = [(None, None)]
        for layer in layers:
            donor = donors if layer_axis is None else donors.select(layer_axis, layer)
            check_graft(self.lm.parts, layer, donor)
            grafts.append((layer, donor))
        result = SweepResult()
        log.info(
            "grafting %d prompts × %d conditions (ungrafted + %d layers), %d new tokens each",
            len(targets),
            len(grafts),
            len(layers),
            self.max_new_tokens,
        )
        base, *grafted = self.conditions(targets, grafts, tail)
        base_probe = _probe_positive(self.probe, base.hidden, -1, self.positive)
        self._record(
            result,
            "ungrafted",
            None,
            prompts,
            base.logits,
            base.logits,
            base.texts,
            base.first_ids,
            base_probe,
            base_probe,
        )
        if len(jailbreaks):
            jb = self.conditions(jailbreaks, [(None, None)], tail, "jailbreak prompts")[0]
            jb_probe = _probe_positive(self.probe, jb.hidden, -1, self.positive)
            self._record(
                result,
                "jailbreak",
                None,
                [""] * len(jailbreaks),
                jb.logits,
                jb.logits,
                jb.texts,
                jb.first_ids,
                jb_probe,
                jb_probe,
            )
        for layer, out in zip(layers, grafted, strict=True):
            grafted_probe = _probe_positive(self.probe, out.hidden, layer, self.positive)
            ref_probe = _probe_positive(self.probe, base.hidden, layer, self.positive)
            self._record(
                result,
                "grafted",
                layer,
                prompts,
                out.logits,
                base.logits,
                out.texts,
                out.first_ids,
                grafted_probe,
                ref_probe,
            )
            s = result.summary[-1]
            log.info(
                "layer %d: refusal %.2f (ungrafted %.2f), affirmative first %.2f, mean KL %.3f",
                layer,
                s["refusal_rate"],
                result.summary[0]["refusal_rate"],
                s["affirmative_first_rate"],
                s["mean_kl"],
            )
        return result

    def _record(
        self, result, condition, layer, prompts, logits, ref_logits, texts, first, probe, ref_probe
    ) -> None:
        tok = self.lm.tokenizer
        logp, ref_logp = F.log_softmax(logits, -1), F.log_softmax(ref_logits, -1)
        kl = (logp.exp() * (logp - ref_logp)).sum(-1).clamp_min(0).numpy()
        top = logits.topk(self.top_k, dim=-1).indices.tolist()
        verdicts = [self.judge.verdict(t) for t in texts]
        emotions = [_emotion_first(tok, ids, self.emotion) for ids in first]
        n_layers = self.lm.parts.num_layers
        for i, text in enumerate(texts):
            tokens = tok.convert_ids_to_tokens(top[i])
            result.rows.append(
                {
                    "condition": condition,
                    "layer": "" if layer is None else layer,
                    "row": i,
                    "prompt": prompts[i][:TRUNCATE] if prompts[i] else "",
                    "kl": float(kl[i]),
                    "top_tokens": " ".join(tokens),
                    "top1_emotion": self.emotion(tokens[0]),
                    "first_token_emotion": emotions[i],
                    "verdict": verdicts[i],
                    "continuation": text[:TRUNCATE].replace("\n", " "),
                    "probe_positive_share": "" if probe is None else float(probe[i]),
                }
            )
        flips = None
        if probe is not None and ref_probe is not None:
            valid = ~np.isnan(probe)
            flips = (
                float(((ref_probe[valid] > 0.5) & (probe[valid] <= 0.5)).mean())
                if valid.any()
                else float("nan")
            )
        result.summary.append(
            {
                "condition": condition,
                "layer": "" if layer is None else layer,
                "relative_depth": "" if layer is None else round(layer / (n_layers - 1), 4),
                "n": len(texts),
                "refusal_rate": float(np.mean([v == "refusal" for v in verdicts])),
                "compliance_rate": float(np.mean([v == "compliance" for v in verdicts])),
                "affirmative_first_rate": float(np.mean([e == "positive" for e in emotions])),
                "negative_top1_rate": float(
                    np.mean([r["top1_emotion"] == "negative" for r in result.rows[-len(texts) :]])
                ),
                "mean_kl": float(kl.mean()),
                "probe_flip_rate": "" if flips is None else flips,
            }
        )
