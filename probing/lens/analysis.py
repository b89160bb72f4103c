"""Logit-lens analysis from a feature file's stored top-K: frequent tokens, emotions, consistency.

No model is needed, only its tokenizer (to turn ids into strings). Definitions are in
``docs/lens.md``; layer indices follow ``docs/feature-format.md`` (0 = embeddings, the last layer is
after the final norm).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probing.errors import ProbingError
from probing.features.identity import recorded_model
from probing.features.positions import position_names, resolve_position
from probing.features.store import FeatureFile
from probing.lens.emotions import EMOTIONS, NEUTRAL, EmotionLists, load_emotions
from probing.models.config import ModelOverride

log = logging.getLogger(__name__)

METRICS = (
    "emotion_hit_rate",
    "negative_rate",
    "positive_rate",
    "negative_mass",
    "positive_mass",
    "topk_consistency",
)
_CODES = {NEUTRAL: 0, "negative": 1, "positive": 2}
_INVISIBLE = {" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_MARKER_TEXT = {"\u0120": " ", "\u2581": " ", "\u010a": "\n", "\u0109": "\t"}


@dataclass(frozen=True)
class TopToken:
    """One of a class's most frequent lens tokens at one layer."""

    token_id: int
    token: str  # decoded text, leading space kept
    count: int  # prompts of the class with this token in their top-K (ids are distinct per prompt)
    emotion: str


@dataclass
class ClassLens:
    """Per-layer lens statistics of one class."""

    name: str
    n: int
    dominant_emotion: str
    metrics: dict[str, np.ndarray]  # name -> [L]
    top: list[list[TopToken]]  # [L][rank], most frequent first


@dataclass
class LensAnalysis:
    """Result of :func:`analyse`: per class and layer, as plain values."""

    num_layers: int
    top_k: int
    classes: dict[str, ClassLens]
    meta: dict[str, Any] = field(default_factory=dict)


# -- reading ----------------------------------------------------------------------------------------
def read_lens(ff: FeatureFile, position: int | str = -1) -> tuple[np.ndarray, np.ndarray]:
    """Lens ids and logits ``[N, L, K]`` at one stored position (an index or a name the file
    records, :func:`~probing.features.positions.resolve_position`); errors if the file has no lens."""
    ids, logits = ff.lens(position)
    return ids.astype(np.int64, copy=False), logits.astype(np.float64, copy=False)


def decode_tokens(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Readable text of each token id (one piece each; a leading space is kept).

    Needs only ``convert_ids_to_tokens``; ``convert_tokens_to_string`` when present turns byte-level
    and sentencepiece pieces into text, otherwise leading space markers become spaces.
    """
    ids = [int(i) for i in ids]
    raw = tokenizer.convert_ids_to_tokens(ids)
    bad = [i for i, t in zip(ids, raw) if t is None]
    if bad:
        raise ProbingError(
            f"token ids {bad[:5]} are not in the tokenizer's vocabulary; the file was extracted with "
            "another model: give that model with --model.name"
        )
    to_text = getattr(tokenizer, "convert_tokens_to_string", None)
    if to_text is None:
        return [_MARKER_TEXT.get(t[:1], t[:1]) + t[1:] if t else t for t in raw]
    return [to_text([t]) for t in raw]


def label(text: str, width: int = 12) -> str:
    """Short one-line label of a token's text for plots and tables."""
    s = text.strip()
    if not s or not any(ch.isprintable() for ch in s):  # whitespace, zero-width: spell it out
        s = "".join(_INVISIBLE.get(ch, f"U+{ord(ch):04X}") for ch in text) or "∅"
    s = re.sub(r"\s+", " ", s)
    return s if len(s) <= width else s[: width - 1] + "…"


# -- analysis ---------------------------------------------------------------------------------------
def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (the stored top-K logits only)."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def select_classes(
    labels: np.ndarray, label_names: Sequence[str], classes: Sequence[str] | None, where: str
) -> list[str]:
    counts = np.bincount(labels, minlength=len(label_names))
    if classes is None:
        chosen = [name for i, name in enumerate(label_names) if counts[i] > 0]
        if not chosen:
            raise ProbingError(f"{where} has no rows")
        return chosen
    chosen = []
    for name in classes:
        if name not in label_names:
            raise ProbingError(
                f"--classes {name!r} is not a class of {where} (its classes: {', '.join(label_names)})"
            )
        if counts[list(label_names).index(name)] == 0:
            raise ProbingError(f"--classes {name!r} has no rows in {where}; leave it out")
        if name not in chosen:
            chosen.append(name)
    return chosen


def analyse_arrays(
    ids: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    tokenizer: Any,
    emotions: EmotionLists | None = None,
    top: int = 10,
    classes: Sequence[str] | None = None,
    where: str = "the feature file",
) -> LensAnalysis:
    """The analysis of lens ids/logits ``[N, L, K]`` with row labels ``[N]`` (see docs/lens.md)."""
    if top < 1:
        raise ProbingError(f"--top must be >= 1, got {top}")
    ids, logits = np.asarray(ids), np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if ids.ndim != 3 or ids.shape != logits.shape or ids.shape[0] != labels.shape[0]:
        raise ValueError(f"lens ids {ids.shape}, logits {logits.shape}, labels {labels.shape}")
    emotions = emotions or load_emotions()
    names = select_classes(labels, label_names, classes, where)
    _, num_layers, k = ids.shape

    uniq, inv = np.unique(ids, return_inverse=True)
    inv = inv.reshape(ids.shape)
    texts = decode_tokens(tokenizer, uniq)
    kinds = [emotions.classify(t) for t in texts]
    slot = np.array([_CODES[e] for e in kinds], dtype=np.int8)[inv]  # [N, L, K]
    probs = softmax(logits)
    hits = {e: slot == _CODES[e] for e in EMOTIONS}
    mass = {e: (probs * hits[e]).sum(-1) for e in EMOTIONS}  # [N, L]
    layer_key = np.arange(num_layers)[None, :, None] * len(uniq)

    out: dict[str, ClassLens] = {}
    for name in names:
        rows = labels == list(label_names).index(name)
        n = int(rows.sum())
        anyhit = {e: hits[e][rows].any(-1) for e in EMOTIONS}  # [n, L]
        total = {e: int(hits[e][rows].sum()) for e in EMOTIONS}
        dominant = "positive" if total["positive"] > total["negative"] else "negative"
        counts = np.bincount(
            (layer_key + inv[rows]).ravel(), minlength=num_layers * len(uniq)
        ).reshape(num_layers, len(uniq))
        order = np.argsort(-counts, axis=1, kind="stable")[:, : max(top, k)]  # ties: lower id first
        ranked = np.take_along_axis(counts, order, axis=1)
        metrics = {
            "emotion_hit_rate": anyhit[dominant].mean(0),
            "negative_rate": anyhit["negative"].mean(0),
            "positive_rate": anyhit["positive"].mean(0),
            "negative_mass": mass["negative"][rows].mean(0),
            "positive_mass": mass["positive"][rows].mean(0),
            "topk_consistency": ranked[:, :k].sum(1) / (n * k),
        }
        toplist = [
            [
                TopToken(int(uniq[j]), texts[j], int(c), kinds[j])
                for j, c in zip(order[layer, :top], ranked[layer, :top])
                if c > 0
            ]
            for layer in range(num_layers)
        ]
        out[name] = ClassLens(name, n, dominant, metrics, toplist)
    return LensAnalysis(num_layers=num_layers, top_k=k, classes=out)


def analyse(
    features: str | os.PathLike | FeatureFile,
    tokenizer: Any,
    emotions: EmotionLists | None = None,
    top: int = 10,
    classes: Sequence[str] | None = None,
    position: int | str = -1,
) -> LensAnalysis:
    """Lens analysis of a feature file; ``tokenizer`` decodes ids (see :func:`file_tokenizer`)."""
    ff = features if isinstance(features, FeatureFile) else FeatureFile(features)
    emotions = emotions or load_emotions()
    ids, logits = read_lens(ff, position)
    check_token_ids(ids, tokenizer, ff.path)
    result = analyse_arrays(
        ids, logits, ff.labels, ff.label_names, tokenizer, emotions, top, classes, str(ff.path)
    )
    result.meta = {
        "path": str(ff.path),
        "model": ff.meta.get("model", ""),
        "architecture": ff.meta.get("architecture", ""),
        "rows": int(ids.shape[0]),
        "positions": ff.meta.get("positions", ""),
        "position": position_names(ff.meta)[resolve_position(ff.meta, position, "--position")],
        "num_positions": ff.num_positions,
        "emotions": emotions.source,
    }
    return result


# -- tokenizer of a file ------------------------------------------------------------------------------
def check_token_ids(ids: np.ndarray, tokenizer: Any, where: Any) -> None:
    """The tokenizer must know every stored id (a smaller vocabulary means another model)."""
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    top = int(ids.max()) if ids.size else -1
    if size is not None and top >= size:
        raise ProbingError(
            f"{where} has lens token id {top} but the tokenizer has only {size} tokens: it belongs to "
            "another model; give the file's model with --model.name"
        )


def file_tokenizer(meta: dict[str, Any], override: ModelOverride | None = None) -> Any:
    """The tokenizer of the model a feature file came from (:func:`recorded_model`; ``override``:
    ``--model.name`` and ``--model.trust_remote_code``, the rest does not matter for a tokenizer)."""
    from probing.models.load import load_tokenizer

    return load_tokenizer(recorded_model(meta, override))


__all__ = [
    "METRICS",
    "ClassLens",
    "LensAnalysis",
    "TopToken",
    "analyse",
    "analyse_arrays",
    "decode_tokens",
    "file_tokenizer",
    "read_lens",
    "select_classes",
]
