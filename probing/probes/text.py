"""The text baseline: a classifier on the prompt's own words, the control every layer is read against.

A probe on a layer's hidden state may know no more than the words of the prompt ("False Sense of
Security", arXiv 2509.03888, finds an n-gram classifier on the text matching Zhou-style probes). The
baseline here is an L2 logistic regression on TF-IDF word 1–2-grams and character 2–5-grams (within word
boundaries, sublinear term frequency) of each row's ``prompt`` (every feature file stores it). Its
regularisation ``C`` is chosen on the validation rows when there are any (the lowest log-loss of
:data:`C_GRID`), else :data:`DEFAULT_C`. It is fitted on exactly the rows the hidden-state probes are
fitted on, and scored and thresholded the same way; reports name it ``probe = text`` with an empty
``layer`` cell.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from probing.errors import ProbingError

log = logging.getLogger(__name__)
TEXT = "text"
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
DEFAULT_C = 10.0
WORDS, CHARS = (1, 2), (2, 5)


def make_text_classifier(c: float = DEFAULT_C, seed: int = 0) -> Any:
    """A fresh scikit-learn pipeline: TF-IDF word 1–2-grams + char 2–5-grams → logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    words = TfidfVectorizer(analyzer="word", ngram_range=WORDS, sublinear_tf=True)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=CHARS, sublinear_tf=True)
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    return make_pipeline(make_union(words, chars), clf)


def _texts(prompts: Sequence[str], option: str) -> list[str]:
    texts = [str(p) for p in prompts]
    if not texts:
        raise ProbingError(f"{option}: the text baseline has no prompts to fit on")
    return texts


def fit_text(
    prompts: Sequence[str],
    y: np.ndarray,
    val: tuple[Sequence[str], np.ndarray] | None = None,
    seed: int = 0,
) -> Any:
    """The text baseline fitted on ``prompts`` with labels ``y``; ``C`` chosen on ``val`` when it holds
    every class of ``y`` (lowest validation log-loss), else :data:`DEFAULT_C`."""
    from sklearn.metrics import log_loss

    texts, y = _texts(prompts, "text baseline"), np.asarray(y)
    if len(np.unique(y)) < 2:
        raise ProbingError(
            f"the text baseline needs rows of at least two classes to fit, got only {np.unique(y)}"
        )
    grid: Sequence[float] = (DEFAULT_C,)
    if val is not None and len(val[1]) and set(np.unique(val[1])) >= set(np.unique(y)):
        grid = C_GRID
    best, best_loss = None, np.inf
    for c in grid:
        clf = make_text_classifier(c, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings on tiny or separable sets
            clf.fit(texts, y)
        if len(grid) == 1:
            return clf
        loss = log_loss(val[1], clf.predict_proba(list(val[0])), labels=clf.classes_)
        if loss < best_loss:
            best, best_loss = clf, loss
    log.debug("text baseline: C=%s (validation log-loss %.4f)", best[-1].C, best_loss)
    return best


def text_probs(clf: Any, prompts: Sequence[str], num_classes: int) -> np.ndarray:
    """Class probabilities ``[N, num_classes]`` (a class absent from training gets 0)."""
    out = np.zeros((len(prompts), num_classes), np.float64)
    if len(prompts):
        p = clf.predict_proba([str(t) for t in prompts])
        out[:, np.asarray(clf.classes_, dtype=np.int64)] = p
    return out


def harm_score(probs: np.ndarray) -> np.ndarray:
    """``p(class 1)`` for two classes, else ``1 - p(class 0)``: the score the probes' reports rank."""
    return probs[:, 1] if probs.shape[1] == 2 else 1.0 - probs[:, 0]


def crossfit_log_probs(
    prompts: Sequence[str], y: np.ndarray, num_classes: int, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Out-of-fold log-probabilities ``[N, num_classes]`` of the text baseline on its own training
    rows (``folds``-fold, stratified): what the words say of each row without having seen it — the
    fixed expert of a product-of-experts fit (in-sample probabilities would be near certain)."""
    from sklearn.model_selection import StratifiedKFold

    texts, y = np.asarray(_texts(prompts, "text baseline"), dtype=object), np.asarray(y)
    out = np.full((len(texts), num_classes), np.log(1.0 / num_classes))
    k = min(folds, int(np.bincount(y).min()) if len(y) else 0)
    if k < 2:
        return out
    for train, held in StratifiedKFold(k, shuffle=True, random_state=seed).split(texts, y):
        clf = fit_text(texts[train], y[train], seed=seed)
        out[held] = np.log(np.clip(text_probs(clf, texts[held], num_classes), 1e-6, 1.0))
    return out
