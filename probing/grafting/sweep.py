"""Grafting sweep: graft a donor state (e.g. the normal-class mean) into target prompts at each layer.

Per layer and prompt: KL divergence of the next-token distribution from the ungrafted one, the top-k
next tokens and the first token's emotion, a greedy continuation judged refusal/compliance, and the
trained probes' predictions on the layers after the graft. Summaries per layer are compared with the
ungrafted targets and with real jailbreak prompts (ungrafted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from probing.errors import ProbingError
from probing.features.activations import ActivationReader
from probing.features.store import FeatureFile
from probing.generation.generate import generate
from probing.generation.judge import KeywordJudge
from probing.grafting.hooks import check_graft, graft
from probing.models.load import LoadedModel
from probing.prompts.render import tokenize_rendered

log = logging.getLogger(__name__)
TRUNCATE = 60  # characters of a continuation kept in reports (never store whole answers)

EmotionFn = Callable[[str], str]  # token string -> "negative" | "positive" | "neutral"


@dataclass
class SweepResult:
    rows: list[dict[str, Any]] = field(default_factory=list)  # per prompt and condition
    summary: list[dict[str, Any]] = field(default_factory=list)  # per condition


def check_same_model(ff: FeatureFile, lm: LoadedModel) -> None:
    """Grafting needs donor states from the model being grafted."""
    meta = ff.meta
    mine, theirs = lm.meta.get("gguf_sha256"), meta.get("gguf_sha256")
    same = mine == theirs if mine and theirs else meta.get("model") == lm.meta.get("model")
    hidden = int(lm.model.config.hidden_size)
    if not same or ff.hidden_size != hidden or ff.num_layers != lm.parts.num_layers:
        raise ProbingError(
            f"{ff.path} holds states of model {meta.get('model')!r} ({ff.num_layers} layers × "
            f"{ff.hidden_size}), but the loaded model is {lm.meta.get('model')!r} "
            f"({lm.parts.num_layers} × {hidden}); extract features with the model you graft, or set "
            "--model.name to the file's model"
        )
    if meta.get("positions") != "last":
        raise ProbingError(
            f"{ff.path} stores positions={meta.get('positions')!r}; grafting replaces the last prompt "
            "token's state, so extract donors with --positions last"
        )


def class_rows(ff: FeatureFile, name: str, option: str = "--source_class") -> np.ndarray:
    names = ff.label_names
    if name not in names:
        raise ProbingError(
            f"{option} {name!r} is not a class of {ff.path} (its classes: {', '.join(names)})"
        )
    return np.flatnonzero(ff.labels == names.index(name))


def class_mean(ff: FeatureFile, name: str) -> torch.Tensor:
    """Mean last-token state ``[L, D]`` of a class, every layer."""
    rows = class_rows(ff, name)
    return torch.from_numpy(np.stack([ff.layer(i)[rows].mean(0) for i in range(ff.num_layers)]))


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


class GraftSweep:
    """Runs conditions (ungrafted, grafted at each layer) over batches of token sequences."""

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
    ):
        self.lm, self.judge, self.emotion = lm, judge, emotion
        self.max_new_tokens, self.batch_size, self.top_k = max_new_tokens, batch_size, top_k
        self.probe, self.positive = probe, positive_class
        self.reader = ActivationReader(lm, "last", top_k=top_k)

    def condition(
        self, seqs: Sequence[Sequence[int]], layer: int | None, donor: torch.Tensor | None
    ):
        """States, next-token logits and continuations of ``seqs`` with (or without) a graft.

        Each batch gets its own graft context for the state pass and for generation, so the graft
        lands on exactly that batch's prefill.
        """
        hidden, logits, texts, first_ids = [], [], [], []

        def grafted():
            return nullcontext() if layer is None else graft(self.lm.parts, layer, donor)

        for lo in range(0, len(seqs), self.batch_size):
            batch = seqs[lo : lo + self.batch_size]
            with grafted():
                out = self.reader(batch, logits=True)
            with grafted():
                gen = generate(self.lm, batch, self.max_new_tokens, batch_size=len(batch))
            hidden.append(out.hidden[:, :, 0])
            logits.append(out.logits)
            texts += gen.text
            first_ids += [t[:1] for t in gen.token_ids]
        return torch.cat(hidden), torch.cat(logits), texts, first_ids

    def run(
        self,
        targets: Sequence[Sequence[int]],
        prompts: Sequence[str],
        layers: Sequence[int],
        donors: torch.Tensor,
        jailbreaks: Sequence[Sequence[int]] = (),
    ) -> SweepResult:
        """``donors`` ``[L, D]`` (one state per layer) or ``[D]`` (the same for all layers)."""
        if donors.ndim == 2 and donors.shape[0] != self.lm.parts.num_layers:
            raise ProbingError(
                f"donor states cover {donors.shape[0]} layers, the model has {self.lm.parts.num_layers}"
            )
        for layer in layers:
            check_graft(self.lm.parts, layer, donors[0] if donors.ndim == 2 else donors)
        result = SweepResult()
        base_h, base_logits, base_text, base_first = self.condition(targets, None, None)
        base_probe = _probe_positive(self.probe, base_h, -1, self.positive)
        self._record(
            result,
            "ungrafted",
            None,
            prompts,
            base_logits,
            base_logits,
            base_text,
            base_first,
            base_probe,
            base_probe,
        )
        if len(jailbreaks):
            jb_h, jb_logits, jb_text, jb_first = self.condition(jailbreaks, None, None)
            jb_probe = _probe_positive(self.probe, jb_h, -1, self.positive)
            self._record(
                result,
                "jailbreak",
                None,
                [""] * len(jailbreaks),
                jb_logits,
                jb_logits,
                jb_text,
                jb_first,
                jb_probe,
                jb_probe,
            )
        for layer in layers:
            donor = donors[layer] if donors.ndim == 2 else donors
            h, logits, text, first = self.condition(targets, layer, donor)
            grafted_probe = _probe_positive(self.probe, h, layer, self.positive)
            ref_probe = _probe_positive(self.probe, base_h, layer, self.positive)
            self._record(
                result,
                "grafted",
                layer,
                prompts,
                logits,
                base_logits,
                text,
                first,
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


def target_sequences(
    ff: FeatureFile, rows: np.ndarray, tokenizer: Any
) -> tuple[list[list[int]], list[str]]:
    """Token ids (as extraction tokenized them) and prompts of feature-file rows."""
    rendered = ff.column("rendered")
    prompts = ff.column("prompt")
    ids, _ = tokenize_rendered(tokenizer, [rendered[i] for i in rows])
    return ids, [prompts[i] for i in rows]
