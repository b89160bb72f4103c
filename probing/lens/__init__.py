"""Stage 5a: logit-lens analysis — which tokens middle layers already predict, and their emotion."""

from probing.lens.analysis import LensAnalysis, analyse, analyse_arrays
from probing.lens.emotions import EmotionLists, load_emotions, normalise

__all__ = [
    "EmotionLists",
    "LensAnalysis",
    "analyse",
    "analyse_arrays",
    "load_emotions",
    "normalise",
]
