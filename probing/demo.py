"""`probing demo`: the whole pipeline on the embedded models and built-in sets, ending in one report.

Probing side on SmolLM2-135M-Instruct (fast default): extraction of normal, malicious and jailbreak
prompts, the paper's weak classifiers, linear+MLP probes on all layers, a 3-way probe, jailbreak
transfer and the logit lens. Alignment side on Qwen2.5-Coder-0.5B-Instruct (a model that refuses):
refusal rates, emotion lens and a grafting sweep. Then the model/format comparison grid. Everything
lands in ``--output`` with ``report.md``; a stage whose optional model is not installed is skipped
and the report says how to install it.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

from probing import demo_generalise as generalise
from probing.errors import ProbingError
from probing.resources import builtin_path

log = logging.getLogger(__name__)
CONFIGS = builtin_path("configs")


@dataclass
class DemoConfig:
    """The demo's sizes (defaults fit in about 15 minutes on 2 CPU cores).

    Args:
        output: folder of the report and every stage's files.
        model: model of the probing side.
        alignment_model: model of the alignment side (refusal, emotions, grafting).
        normal: built-in normal prompts used.
        malicious: built-in malicious prompts used.
        jailbreak: built-in jailbreak prompts used.
        contrast: built-in contrast prompts (safe requests in harmful words) for "Does it generalise?".
        heldout: prompts of each held-out set and form (safe-sounding / harmful × imperative / question).
        alignment_per_class: prompts per class on the alignment model.
        epochs: probe training epochs.
        graft_prompts: malicious prompts grafted into.
        graft_stride: graft at every n-th layer.
        max_new_tokens: greedy tokens judged for refusal.
        alignment: run the alignment side.
        compare: run the model/format comparison.
        compare_per_class: normal and malicious prompts per run of the comparison.
    """

    output: str = "demo_out"
    model: str = "smollm2-135m-instruct"
    alignment_model: str = "qwen2.5-coder-0.5b-instruct"
    normal: int = 200
    malicious: int = 200
    jailbreak: int = 100
    contrast: int = 150
    heldout: int = 50
    alignment_per_class: int = 50
    epochs: int = 30
    graft_prompts: int = 24
    graft_stride: int = 4
    compare_per_class: int = 100
    max_new_tokens: int = 16
    alignment: bool = True
    compare: bool = True


@dataclass
class Demo:
    cfg: DemoConfig
    out: Path = field(init=False)
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out = Path(self.cfg.output)
        self.out.mkdir(parents=True, exist_ok=True)

    def stage(self, name: str, fn: Callable[[], None], optional: bool = False) -> None:
        log.info("== demo stage: %s", name)
        start = time.perf_counter()
        try:
            fn()
        except ProbingError as err:
            if not optional:
                raise
            self.notes[name] = f"skipped: {err}"
            log.warning("demo stage %s skipped: %s", name, err)
        self.timings[name] = time.perf_counter() - start


def _prompts(normal: int, malicious: int, jailbreak: int) -> list[Any]:
    from probing.prompts import PromptSource

    return [
        PromptSource(path="normal", limit=normal),
        PromptSource(path="malicious", limit=malicious),
        PromptSource(path="jailbreak", limit=jailbreak),
    ]


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


# -- probing side --------------------------------------------------------------------------------------
def probing_side(demo: Demo) -> None:
    from probing.features.extract import ExtractConfig, extract
    from probing.models import ModelConfig, load_model
    from probing.probes import weak
    from probing.training.cli import run as lightning_run

    cfg = demo.cfg
    feats = demo.out / "features" / f"{cfg.model}.h5"
    state: dict[str, Any] = {}

    def do_extract() -> None:
        state["lm"] = load_model(ModelConfig(name=cfg.model))
        extract(
            ExtractConfig(
                model=ModelConfig(name=cfg.model),
                prompts=generalise.prompt_sources(
                    cfg.normal, cfg.malicious, cfg.jailbreak, cfg.contrast, cfg.heldout
                ),
                output=str(feats),
                template="chat",
            ),
            lm=state["lm"],
        )

    def do_weak() -> None:
        weak.run(
            [
                "--data.path",
                str(feats),
                "--data.classes",
                "[normal, malicious]",
                "--output_dir",
                str(demo.out / "weak"),
            ]
        )

    def fit(name: str, config: str, classes: str) -> None:
        root = demo.out / name
        lightning_run(
            [
                "fit",
                "--config",
                str(CONFIGS / "probe" / config),
                "--data.path",
                str(feats),
                "--data.classes",
                classes,
                "--trainer.default_root_dir",
                str(root),
                "--trainer.logger.init_args.save_dir",
                str(root),
                "--trainer.max_epochs",
                str(cfg.epochs),
                "--trainer.enable_progress_bar",
                "false",
            ]
        )

    def do_transfer() -> None:
        from probing.features.store import FeatureFile
        from probing.probes.module import load_probe_checkpoint
        from probing.probes.transfer import flagged_share, write

        ckpt = [p for p in (demo.out / "probes").rglob("*.ckpt") if p.name != "last.ckpt"]
        ff = FeatureFile(feats)
        probe = load_probe_checkpoint(sorted(ckpt, key=lambda p: p.stat().st_mtime)[-1], ff.meta)
        rows = flagged_share(probe, ff, ["jailbreak", "malicious", "normal"])
        write(rows, demo.out / "jailbreak", f"{cfg.model}: probes trained on normal vs malicious")

    def do_lens() -> None:
        from probing.lens.cli import run as lens_run

        lens_run(
            [
                str(feats),
                "--output",
                str(demo.out / "lens"),
                "--classes",
                "[normal, malicious, jailbreak]",
            ],
            tokenizer=state["lm"].tokenizer,
        )

    def do_generalise() -> None:
        from probing.features.store import FeatureFile

        with FeatureFile(feats) as ff:
            names = ff.source_names
        state["generalise"] = generalise.run_generalise(feats, demo.out / "generalise", names)

    def do_refusal() -> None:
        from probing.generation.refusal import RefusalConfig, refusal

        n = 30
        refusal(
            RefusalConfig(
                model=ModelConfig(name=cfg.model),
                prompts=_prompts(n, n, n),
                output=str(demo.out / "refusal"),
                max_new_tokens=cfg.max_new_tokens,
                progress=False,
            ),
            lm=state["lm"],
        )

    demo.stage("extract", do_extract)
    demo.stage("weak classifiers", do_weak)
    demo.stage("linear+MLP probes", lambda: fit("probes", "linear_mlp.yaml", "[normal, malicious]"))
    demo.stage(
        "3-way probe", lambda: fit("probes3", "linear.yaml", "[normal, malicious, jailbreak]")
    )
    demo.stage("jailbreak transfer", do_transfer)
    demo.stage("logit lens", do_lens)
    demo.stage("refusal", do_refusal)
    demo.stage("does it generalise", do_generalise)
    result = state.pop("generalise", None)
    state.clear()
    _probing_report(demo, feats)
    if result is not None:
        demo.sections.append(generalise.section(result, "generalise", cfg.model))


def _probing_report(demo: Demo, feats: Path) -> None:
    from probing.features.info import summarize

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

{_table(probes_csv, ["layer", "probe", "accuracy", "f1", "auroc"], limit=200, where=lambda r: r["split"] == "test" and int(r["layer"]) % 3 == 0)}

### Jailbreaks

Share of prompts a probe trained on normal vs malicious flags as malicious, per layer:

![jailbreak]({_rel(demo, demo.out / "jailbreak" / "jailbreak_transfer.png")})

3-way probe (normal / malicious / jailbreak), test accuracy every third layer:

{_table(three_csv, ["layer", "probe", "accuracy", "f1"], limit=200, where=lambda r: r["split"] == "test" and int(r["layer"]) % 3 == 0)}

### Logit lens

![consistency]({_rel(demo, demo.out / "lens" / "consistency.png")})
![emotion mass]({_rel(demo, demo.out / "lens" / "emotion_mass.png")})

{_heatmaps(demo, demo.out / "lens")}
"""
    )


# -- alignment side ------------------------------------------------------------------------------------
def alignment_side(demo: Demo) -> None:
    from probing.features.extract import ExtractConfig, extract
    from probing.generation.refusal import RefusalConfig, refusal
    from probing.grafting.cli import GraftConfig, sweep
    from probing.models import ModelConfig, load_model

    cfg = demo.cfg
    name = cfg.alignment_model
    feats = demo.out / "features" / f"{name}.h5"
    out = demo.out / "alignment"
    state: dict[str, Any] = {}
    n = cfg.alignment_per_class

    def do_load() -> None:
        state["lm"] = load_model(ModelConfig(name=name))

    demo.stage("alignment model", do_load, optional=True)
    if "lm" not in state:
        return
    lm = state["lm"]
    demo.stage(
        "alignment extract",
        lambda: extract(
            ExtractConfig(
                model=ModelConfig(name=name),
                prompts=_prompts(n, n, n),
                output=str(feats),
                template="chat",
            ),
            lm=lm,
        ),
    )
    demo.stage(
        "alignment refusal",
        lambda: refusal(
            RefusalConfig(
                model=ModelConfig(name=name),
                prompts=_prompts(n // 2, n // 2, n // 2),
                output=str(out / "refusal"),
                max_new_tokens=cfg.max_new_tokens,
                progress=False,
            ),
            lm=lm,
        ),
    )

    def do_lens() -> None:
        from probing.lens.cli import run as lens_run

        lens_run([str(feats), "--output", str(out / "lens")], tokenizer=lm.tokenizer)

    demo.stage("alignment lens", do_lens)
    demo.stage(
        "grafting sweep",
        lambda: sweep(
            GraftConfig(
                features=str(feats),
                limit=cfg.graft_prompts,
                layer_stride=cfg.graft_stride,
                max_new_tokens=cfg.max_new_tokens,
                output=str(out / "graft"),
            ),
            lm=lm,
        ),
    )
    state.clear()
    _alignment_report(demo, name, out)


def _rates(folder: Path) -> str:
    summary = json.loads((folder / "refusal_summary.json").read_text())["classes"]
    return ", ".join(f"{c} {v['rate']:.0%} of {v['n']}" for c, v in summary.items())


def _aligned_enough(folder: Path) -> str:
    rate = (
        json.loads((folder / "refusal_summary.json").read_text())["classes"]
        .get("malicious", {})
        .get("rate")
    )
    if rate is None or rate >= 0.3:
        return "."
    return f" — with {rate:.0%} of malicious prompts refused, too few for the alignment analyses, which run on the second model below."


def _alignment_report(demo: Demo, name: str, out: Path) -> None:
    rates = _rates(out / "refusal")
    with open(out / "graft" / "graft_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    base = next(r for r in rows if r["condition"] == "ungrafted")
    grafted = [r for r in rows if r["condition"] == "grafted"]
    drops = [r for r in grafted if float(r["refusal_rate"]) < float(base["refusal_rate"]) - 0.1]
    if drops:
        verdict = (
            "Grafting the normal-class mean state lowers the refusal rate at layers "
            + ", ".join(f"{r['layer']} ({float(r['refusal_rate']):.0%})" for r in drops)
            + f", against {float(base['refusal_rate']):.0%} ungrafted."
        )
    else:
        verdict = (
            f"Grafting the normal-class mean state does not lower the refusal rate by more than 10 points at "
            f"any grafted layer here (ungrafted: {float(base['refusal_rate']):.0%})."
        )
    demo.sections.append(
        f"""## Alignment side: {name}

Refusal rate with greedy decoding (keyword judge): {rates}.

### Emotion association (logit lens)

![consistency]({_rel(demo, out / "lens" / "consistency.png")})
![emotion mass]({_rel(demo, out / "lens" / "emotion_mass.png")})

{_heatmaps(demo, out / "lens")}

### Logit grafting

{verdict}

![graft]({_rel(demo, out / "graft" / "graft_sweep.png")})

{_table(out / "graft" / "graft_summary.csv", ["condition", "layer", "n", "refusal_rate", "affirmative_first_rate", "negative_top1_rate", "mean_kl"], limit=100)}

Continuations in `alignment/graft/graft_results.csv` are truncated to 60 characters.
"""
    )


def compare_side(demo: Demo) -> None:
    from probing.compare.cli import run as compare_run

    out = demo.out / "compare"

    def do_compare() -> None:
        n = demo.cfg.compare_per_class
        compare_run(
            [
                "--config",
                str(CONFIGS / "compare" / "default.yaml"),
                "--prompts",
                f"[{{path: normal, limit: {n}}}, {{path: malicious, limit: {n}}}]",
                "--output_dir",
                str(out),
                "--features_dir",
                str(demo.out / "features" / "compare"),
            ]
        )

    demo.stage("compare", do_compare, optional=True)
    if (out / "compare.md").exists():  # its image links are relative to its own folder
        demo.sections.append(
            (out / "compare.md").read_text().replace("](compare_grid", "](compare/compare_grid")
        )


def write_report(demo: Demo) -> Path:
    import probing

    total = sum(demo.timings.values())
    timing = "\n".join(f"| {k} | {v:.0f} s |" for k, v in demo.timings.items())
    notes = "\n".join(f"- **{k}**: {v}" for k, v in demo.notes.items()) or "- none"
    text = f"""# probing demo report

probing {probing.__version__}. Models: `{demo.cfg.model}` (probing side), `{demo.cfg.alignment_model}`
(alignment side). Data: the built-in sets in `datasets/` (requests only) — normal {demo.cfg.normal},
malicious {demo.cfg.malicious}, jailbreak {demo.cfg.jailbreak}, contrast {demo.cfg.contrast}, held-out
{demo.cfg.heldout} per set and form (evaluation only). Layer 0 = embeddings, layer i = output of decoder
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


def run_demo(cfg: DemoConfig) -> Path:
    demo = Demo(cfg)
    probing_side(demo)
    if cfg.alignment:
        alignment_side(demo)
    if cfg.compare:
        compare_side(demo)
    path = write_report(demo)
    log.info("demo finished in %.0f s: %s", sum(demo.timings.values()), path)
    return path


def run(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="probing demo", description="The whole pipeline on the embedded models."
    )
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(DemoConfig, None)
    ns = parser.parse_args(argv)
    ns.pop("config", None)
    run_demo(DemoConfig(**ns.as_dict()))
    return 0
