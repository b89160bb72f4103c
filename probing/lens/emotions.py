"""Emotion token lists: which lens tokens count as negative (refusal) or positive (affirmation).

Lists live in YAML (default ``configs/emotion/default.yaml``) with exactly two keys, ``negative`` and
``positive``, each a list of single words. A token matches an entry when :func:`normalise` of the token
string equals the entry (entries are normalised the same way when loaded). Tokens are single vocabulary
pieces, so multi-word entries ("of course") could never match and are refused.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from probing.errors import ProbingError
from probing.resources import builtin_path

Emotion = Literal["negative", "positive", "neutral"]
EMOTIONS: tuple[str, str] = ("negative", "positive")
NEUTRAL = "neutral"

# Word-boundary markers of subword vocabularies: byte-level BPE space/newline/tab (Ġ Ċ ĉ) and
# sentencepiece's space (▁).
SPACE_MARKERS = "\u0120\u010a\u0109\u2581"
_APOSTROPHES = str.maketrans(dict.fromkeys("\u2018\u2019\u201b\u02bc\u2032\u00b4`", "'"))
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def normalise(token: str) -> str:
    """The comparable form of a token string.

    NFKC, typographic apostrophes made ``'``, leading space markers (``Ġ``, ``▁``, ...) and
    whitespace removed, punctuation and symbols stripped at both ends (inner ones kept: ``can't``),
    then case-folded. ``normalise("ĠSorry,") == normalise("▁sorry") == "sorry"``.
    """
    text = unicodedata.normalize("NFKC", token).translate(_APOSTROPHES)
    text = text.lstrip(SPACE_MARKERS + " \t\r\n")
    return _EDGES.sub("", text).casefold()


def default_emotions_path() -> Path:
    """The project's lists, ``configs/emotion/default.yaml``."""
    return builtin_path("configs", "emotion", "default.yaml")


@dataclass
class EmotionLists:
    """Negative (refusal) and positive (affirmation) words, matched on normalised token strings.

    Args:
        negative: words of refusal/negative emotion ("sorry", "cannot", ...).
        positive: words of affirmation/positive emotion ("sure", "glad", ...).
        source: where the lists came from (for messages).
    """

    negative: list[str]
    positive: list[str]
    source: str = "<in memory>"
    _lookup: dict[str, Emotion] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._lookup = {}
        for emotion in EMOTIONS:
            words = getattr(self, emotion)
            if not isinstance(words, list) or not words:
                raise ProbingError(
                    f"emotion file {self.source}: `{emotion}` must be a non-empty list of words"
                )
            for word in words:
                self._add(emotion, word)

    def _add(self, emotion: str, word: object) -> None:
        where = f"emotion file {self.source}: `{emotion}` entry {word!r}"
        if not isinstance(word, str):
            raise ProbingError(f"{where} is not a string; quote it")
        key = normalise(word)
        if not key:
            raise ProbingError(f"{where} is empty after normalising (only punctuation?)")
        if len(key.split()) > 1:
            raise ProbingError(
                f"{where} has several words; lens tokens are single vocabulary pieces, so list "
                "single words only"
            )
        other = self._lookup.get(key)
        if other is not None and other != emotion:
            raise ProbingError(f"{where} is also listed under `{other}`; keep it in one list")
        self._lookup[key] = emotion  # type: ignore[assignment]

    def classify(self, token: str) -> Emotion:
        """``negative``, ``positive`` or ``neutral`` for a token string (raw or decoded)."""
        return self._lookup.get(normalise(token), NEUTRAL)

    def words(self, emotion: str) -> list[str]:
        """The normalised entries of one emotion."""
        return [k for k, v in self._lookup.items() if v == emotion]


def load_emotions(path: str | Path | None = None) -> EmotionLists:
    """The emotion lists of ``path`` (default: :func:`default_emotions_path`)."""
    path = Path(path).expanduser() if path else default_emotions_path()
    if not path.is_file():
        raise ProbingError(f"emotion file {path} does not exist; fix --emotions")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ProbingError(
            f"emotion file {path} is not valid YAML ({first}); fix --emotions"
        ) from None
    keys = set(data) if isinstance(data, dict) else None
    if keys != set(EMOTIONS):
        found = sorted(map(str, keys)) if keys is not None else type(data).__name__
        raise ProbingError(
            f"emotion file {path}: expected a mapping with exactly the keys `negative` and "
            f"`positive` (lists of words), found {found}; fix --emotions"
        )
    return EmotionLists(negative=data["negative"], positive=data["positive"], source=str(path))
