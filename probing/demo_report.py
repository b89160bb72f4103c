"""The demo's ``report.md``: one markdown section per side, tables from the stages' CSVs, timings."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import probing
from probing.demo_run import Demo
from probing.errors import ProbingError
from probing.features.info import summarize
from probing.generation.intervals import shown, wilson
from probing.grafting.summary import sentence


def _rel(demo: Demo, path: Path) -> str:
    return str(Path(path).resolve().relative_to(demo.out.resolve()))


def _table(
    path: Path,
    keep: list[str] | None = None,
    limit: int = 40,
    where: Callable[[dict], bool] | None = None,
) -> str:
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if where is None or where(r)]
    if not rows:
        return "(no rows)"
    cols = keep or list(rows[0])

    def fmt(v: str) -> str:
        try:
            return f"{float(v):.3f}" if "." in v else v
        except ValueError:
            return v

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows[:limit]]
    return "\n".join(lines)


def _heatmaps(demo: Demo, folder: Path) -> str:
    """Heatmap images of each class and a link to the lens tables."""
    images = "\n".join(
        f"![{p.stem}]({_rel(demo, p)})" for p in sorted(folder.glob("lens_heatmap_*.png"))
    )
    summary = _rel(demo, folder / "lens_summary.md")
    return f"{images}\n\nTop tokens and consistency per layer: [{summary}]({summary})."


def _find(folder: Path, pattern: str) -> Path:
    found = sorted(folder.rglob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ProbingError(f"expected {pattern} under {folder}")
    return found[-1]


def probing_report(demo: Demo, feats: Path) -> None:
    info = summarize(feats)
    probes_csv = _find(demo.out / "probes", "per_layer_metrics.csv")
    probes_png = _find(demo.out / "probes", "accuracy_per_layer.png")
    three_csv = _find(demo.out / "probes3", "per_layer_metrics.csv")
    demo.sections.append(
        f"""## Probing side: {info["model"]}

Feature file `{_rel(demo, feats)}`: {info["rows"]} prompts {info["labels"]}, {info["layers"]} layers
(0 = embeddings) × {info["hidden_size"]}, template `{info["template"]}`.
Refusal rate with greedy decoding (keyword judge): {_rates(demo.out / "refusal")}{_aligned_enough(demo.out / "refusal")}

### Weak classifiers (the paper's SVM and MLP(100), 70/30 split) and Lightning probes

![weak]({_rel(demo, demo.out / "weak" / "accuracy_per_layer.png")})
![probes]({_rel(demo, probes_png)})

Test accuracy per layer of the probes (linear and MLP, 70/15/15 split):

{_table(probes_csv, ["layer", "probe", "accuracy", "f1", "auroc"], limit=200, where=lambda r: r["split"] == "test" and (r["layer"] == "" or int(r["layer"]) % 3 == 0))}

### Jailbreaks

Share of prompts a probe trained on normal vs malicious flags as malicious, per layer:

![jailbreak]({_rel(demo, demo.out / "jailbreak" / "jailbreak_transfer.png")})

3-way probe (normal / malicious / jailbreak), test accuracy every third layer:

{_table(three_csv, ["layer", "probe", "accuracy", "f1"], limit=200, where=lambda r: r["split"] == "test" and (r["layer"] == "" or int(r["layer"]) % 3 == 0))}

### Logit lens

![consistency]({_rel(demo, demo.out / "lens" / "consistency.png")})
![emotion mass]({_rel(demo, demo.out / "lens" / "emotion_mass.png")})

{_heatmaps(demo, demo.out / "lens")}
"""
    )


def _rates(folder: Path) -> str:
    summary = json.loads((folder / "refusal_summary.json").read_text())["classes"]
    return ", ".join(
        f"{c} {shown(v['rate'], *wilson(v['refused'], v['n']))} of {v['n']}"
        for c, v in summary.items()
    )


def _aligned_enough(folder: Path) -> str:
    rate = (
        json.loads((folder / "refusal_summary.json").read_text())["classes"]
        .get("malicious", {})
        .get("rate")
    )
    if rate is None or rate >= 0.3:
        return "."
    return f" — with {rate:.0%} of malicious prompts refused, too few for the alignment analyses, which run on the second model below."


def _located(demo: Demo, out: Path, sentence: str | None) -> str:
    """The jailbreak located on the harmfulness and refusal directions (skipped stage: a note)."""
    folder = out / "directions"
    if not (folder / "located.png").is_file():
        return f"(not run: {demo.notes.get('jailbreak located', 'no refusal verdicts')})"
    return f"""{sentence or "The refusal label set has too few rows of a class to place the jailbreaks."}

![located]({_rel(demo, folder / "located.png")})
![directions]({_rel(demo, folder / "directions.png")})

Placement 0 = like normal requests (harmfulness) or replies that complied (refusal), 1 = like plain
harmful requests or refusals; directions fitted without the jailbreak rows (docs/directions.md).
"""


def alignment_report(demo: Demo, name: str, out: Path, located: str | None = None) -> None:
    rates = _rates(out / "refusal")
    with open(out / "graft" / "graft_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    verdict = sentence(rows, "the states of paired normal prompts (the paper's way)")
    demo.sections.append(
        f"""## Alignment side: {name}

Refusal rate with greedy decoding (keyword judge): {rates}.

### Emotion association (logit lens)

![consistency]({_rel(demo, out / "lens" / "consistency.png")})
![emotion mass]({_rel(demo, out / "lens" / "emotion_mass.png")})

{_heatmaps(demo, out / "lens")}

### Where does the jailbreak act? (harmfulness at `inst`, refusal at the template tokens)

{_located(demo, out, located)}

### Logit grafting

{verdict}

![graft]({_rel(demo, out / "graft" / "graft_sweep.png")})

{_table(out / "graft" / "graft_summary.csv", ["condition", "layer", "n", "refusal_rate", "refusal_low", "refusal_high", "refusal_change", "change_low", "change_high", "affirmative_first_rate", "mean_kl"], limit=100)}

Continuations in `alignment/graft/graft_results.csv` are truncated to 60 characters.
"""
    )


def write_report(demo: Demo) -> Path:
    total = sum(demo.timings.values())
    timing = "\n".join(f"| {k} | {v:.0f} s |" for k, v in demo.timings.items())
    notes = "\n".join(f"- **{k}**: {v}" for k, v in demo.notes.items()) or "- none"
    text = f"""# probing demo report

probing {probing.__version__}. Models: `{demo.cfg.model}` (probing side), `{demo.cfg.alignment_model}`
(alignment side). Data: the built-in sets in `datasets/` (requests only) — normal {demo.cfg.normal},
malicious {demo.cfg.malicious}, jailbreak {demo.cfg.jailbreak}, contrast {demo.cfg.contrast}, held-out
{demo.cfg.heldout} per set and form (evaluation only), {demo.cfg.crosslingual} per set in English and in each
translation (es, zh, ru; test only). Layer 0 = embeddings, layer i = output of decoder
block i.

{"".join(s + chr(10) for s in demo.sections)}
## Skipped stages

{notes}

## Timings

| stage | time |
|---|---|
{timing}
| **total** | **{total:.0f} s** |
"""
    path = demo.out / "report.md"
    path.write_text(text, encoding="utf-8")
    return path
