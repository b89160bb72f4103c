"""The demo's "Does the model know more than the words?" section: every layer's probe against the text
baseline (the prompt's word and character n-grams) on held-out sources and across languages, where the
words of English prompts cannot carry over, with paired bootstrap intervals (``above_words.csv``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from probing.generalize.config import GeneralizeConfig
from probing.generalize.run import generalize
from probing.probes.above_words import CROSS_MEAN, ranges, verdict
from probing.prompts import PromptSource

LANGS = ("es", "zh", "ru")
SETS = ("normal", "malicious", "contrast")
BOOTSTRAP = 500
# labels of the cross-lingual rows: apart from the training classes, mapped onto them for the test
CLASS_MAP = {
    **{f"{s}_translated": "malicious" if s == "malicious" else "normal" for s in SETS},
    **{f"en_{s}": "malicious" if s == "malicious" else "normal" for s in SETS},
}


def prompt_sources(per_set: int) -> list[PromptSource]:
    """``per_set`` rows of each set in English (the originals of the translated rows) and in each
    language (their translations, the same requests)."""
    if per_set <= 0:
        return []
    out = [
        PromptSource(path=s, label=f"en_{s}", name=f"{s}-en", limit=per_set,
                     where={"crosslingual": "translated"})
        for s in SETS
    ]  # fmt: skip
    out += [
        PromptSource(path=f"{s}_translated", name=f"{s}-{lang}", limit=per_set,
                     where={"lang": lang})
        for lang in LANGS for s in SETS
    ]  # fmt: skip
    return out


def fold(sources: list[str]) -> dict[str, Any] | None:
    """Train on the English training sources, test on each language's pooled rows (and each alone)."""
    groups = []
    for lang in ("en", *LANGS):
        members = [f"{s}-{lang}" for s in SETS if f"{s}-{lang}" in sources]
        if members:
            groups.append({"name": lang, "sources": members})
    train = [s for s in ("normal", "malicious", "contrast") if s in sources]
    if not groups or not train:
        return None
    singles = [m for g in groups for m in g["sources"]]
    return {"name": "english → languages", "train": train, "test": singles + groups}


def run_crosslingual(features: Path, out: Path, sources: list[str], class_map: dict) -> dict | None:
    """``probing generalize`` of the cross-lingual fold (linear probe and text baseline)."""
    f = fold(sources)
    if f is None:
        return None
    return generalize(
        GeneralizeConfig(
            features=[str(features)], output=str(out), classes=["normal", "malicious"],
            class_map={**class_map, **CLASS_MAP}, loso=False, matrix=[f],
            probes=["linear", "text"], bootstrap=BOOTSTRAP,
        )
    )  # fmt: skip


def _cell(rows: list[dict[str, Any]], test: str, layer: int, metric: str = "auroc") -> str:
    for r in rows:
        if r["test"] == test and r["layer"] == layer and r["metric"] == metric:
            if math.isnan(r["delta"]):
                return "–"
            return f"{r['delta']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]"
    return "–"


def _text_level(result: dict[str, Any], test: str | None) -> str:
    vals = [
        r["auroc"] for r in result["rows"]
        if r["probe"] == "text" and r["split"] == "cross_source" and (test is None or r["test"] == test)
    ]  # fmt: skip
    vals = [v for v in vals if not math.isnan(v)]
    return f"{sum(vals) / len(vals):.2f}" if vals else "–"


def _verdicts(rows: list[dict[str, Any]], test: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {"beat": [], "match": [], "lose": []}
    for r in rows:
        if r["test"] == test and r["metric"] == "auroc" and r["probe"] == "linear":
            v = verdict(r)
            if v in out:
                out[v].append(int(r["layer"]))
    return out


def section(cross: dict[str, Any], lingual: dict[str, Any] | None, rel: str, model: str) -> str:
    """The report section: per layer, linear probe − text (Δ AUROC with its 95 % interval) on the
    held-out sources and per language, and a plain sentence on the paper's early-layer claim."""
    above = [r for r in cross.get("above_words") or [] if r["probe"] == "linear"]
    langs = [r for r in (lingual or {}).get("above_words") or [] if r["probe"] == "linear"]
    tests = [t for t in ("en", *LANGS) if any(r["test"] == t for r in langs)]
    layers = sorted({r["layer"] for r in above})
    if not layers:
        return ""
    step = max(1, len(layers) // 10)
    head = "| layer | held-out sources (mean) |" + "".join(f" {t} |" for t in tests)
    lines = [head, "|---" * (2 + len(tests)) + "|"]
    for layer in layers[::step]:
        lines.append(
            f"| {layer} | {_cell(above, CROSS_MEAN, layer)} |"
            + "".join(f" {_cell(langs, t, layer)} |" for t in tests)
        )
    levels = f"text baseline AUROC: held-out sources {_text_level(cross, None)}" + "".join(
        f", {t} {_text_level(lingual, t)}" for t in tests if lingual
    )
    return f"""## Does the model know more than the words?

The text baseline is a logistic regression on the prompt's own words (TF-IDF word 1–2-grams and
character 2–5-grams), fitted on exactly the rows the probes are fitted on. Each cell is the linear
probe's AUROC minus the baseline's on the same rows, with a paired bootstrap 95 % interval
({BOOTSTRAP} resamples): above 0 the layer's state knows more than the words. *Held-out sources*: the
mean over the sources of "Does it generalise?"; *en / es / zh / ru*: trained on English only, tested on
the same requests in English and in translation (each language's safe and harmful rows ranked against
each other), where English words cannot carry over. {levels}. Details: [{rel}/above_words.csv]({rel}/above_words.csv),
[{rel}/crosslingual/generalization.md]({rel}/crosslingual/generalization.md).

{chr(10).join(lines)}

{claim(above, langs, tests, layers, model)}
"""


def claim(above: list, langs: list, tests: list[str], layers: list[int], model: str) -> str:
    """One plain sentence on where the paper's early-layer claim survives the text control."""
    early = [x for x in layers if 0 < x <= max(layers) // 3]
    cross = _verdicts(above, CROSS_MEAN)
    beat_early = [x for x in early if x in cross["beat"]]
    survives = (
        f"survives the text control on held-out sources at early layers {ranges(beat_early)} "
        f"(of {ranges(early)})"
        if beat_early
        else f"does not survive the text control on held-out sources: no early layer ({ranges(early)}) "
        "beats the words"
    )
    text = (
        f"On {model}, the paper's early-layer claim {survives}; over all layers the states beat the "
        f"words at {ranges(cross['beat'])}, match them at {ranges(cross['match'])} and lose to them at "
        f"{ranges(cross['lose'])}."
    )
    other = [t for t in tests if t != "en"]
    if other:
        per = []
        for t in other:
            v = _verdicts(langs, t)
            per.append(f"{t}: beat at {ranges(v['beat'])}, lose at {ranges(v['lose'])}")
        text += " Across languages (trained on English): " + "; ".join(per) + "."
    return text
