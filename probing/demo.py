"""`probing demo`: the whole pipeline on the embedded models and built-in sets, ending in one report.

Probing side on SmolLM2-135M-Instruct (fast default): extraction of normal, malicious and jailbreak
prompts, the paper's weak classifiers, linear+MLP probes on all layers, a 3-way probe, jailbreak
transfer and the logit lens. Alignment side on Qwen2.5-Coder-0.5B-Instruct (a model that refuses):
refusal rates, emotion lens and a grafting sweep. Then the model/format comparison grid. Everything
lands in ``--output`` with ``report.md``; a stage whose optional model is not installed is skipped
and the report says how to install it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from probing import demo_generalise as generalise
from probing import demo_words as words
from probing.config import load_config
from probing.demo_config import DemoConfig
from probing.demo_report import alignment_report, probing_report, write_report
from probing.demo_run import Demo
from probing.errors import ProbingError
from probing.grafting.config import GraftConfig
from probing.outputs import check_output_folder
from probing.resources import builtin_path

log = logging.getLogger(__name__)
CONFIGS = builtin_path("configs")
DECODE_ROWS = 256  # rows decoded together (refusal, grafting): the demo's models are small


# -- probing side --------------------------------------------------------------------------------------
def probing_side(demo: Demo) -> None:
    from probing.data.options import DataOptions
    from probing.features.extract import ExtractConfig, extract
    from probing.models import ModelConfig, load_model, resolve_model
    from probing.probes import weak, weak_config
    from probing.training.train import train

    cfg = demo.cfg
    feats = demo.out / "features" / f"{cfg.model}.h5"
    state: dict[str, Any] = {}

    def do_extract() -> None:
        state["source"] = resolve_model(ModelConfig(name=cfg.model))  # once, for every stage
        state["lm"] = load_model(state["source"])
        extract(
            ExtractConfig(
                model=state["source"].config,
                prompts=generalise.prompt_sources(
                    cfg.normal, cfg.malicious, cfg.jailbreak, cfg.contrast, cfg.heldout
                )
                + words.prompt_sources(cfg.crosslingual),
                output=str(feats),
                template="chat",
            ),
            lm=state["lm"],
        )

    def do_weak() -> None:
        data = DataOptions(str(feats), classes=["normal", "malicious"], split=weak_config.SPLIT)
        weak.run_weak(weak_config.WeakConfig(data=data, output_dir=str(demo.out / "weak")))

    def fit(name: str, config: str, classes: list[str]) -> None:
        root = demo.out / name
        train(
            CONFIGS / "probe" / config,
            {
                "data.path": feats,
                "data.classes": classes,
                "trainer.default_root_dir": root,
                "trainer.logger.init_args.save_dir": root,
                "trainer.max_epochs": cfg.epochs,
                "trainer.enable_progress_bar": False,
            },
        )

    def do_transfer() -> None:
        from probing.features.store import FeatureFile
        from probing.probes.checkpoint import load_probe_checkpoint
        from probing.probes.transfer import flagged_share, write

        ckpt = [p for p in (demo.out / "probes").rglob("*.ckpt") if p.name != "last.ckpt"]
        ff = FeatureFile(feats)
        probe = load_probe_checkpoint(sorted(ckpt, key=lambda p: p.stat().st_mtime)[-1], ff.meta)
        rows = flagged_share(probe, ff, ["jailbreak", "malicious", "normal"])
        write(rows, demo.out / "jailbreak", f"{cfg.model}: probes trained on normal vs malicious")

    def do_lens() -> None:
        from probing.lens.run import LensConfig, lens

        classes = ["normal", "malicious", "jailbreak"]
        lens(
            LensConfig(features=str(feats), output=str(demo.out / "lens"), classes=classes),
            tokenizer=state["lm"].tokenizer,
        )

    def do_generalise() -> None:
        from probing.features.store import FeatureFile

        with FeatureFile(feats) as ff:
            names = ff.source_names
        state["generalise"] = generalise.run_generalise(feats, demo.out / "generalise", names)
        state["crosslingual"] = words.run_crosslingual(
            feats, demo.out / "generalise" / "crosslingual", names, generalise.CLASS_MAP
        )

    def do_refusal() -> None:
        from probing.generation.refusal import RefusalConfig, refusal

        n = 30
        refusal(
            RefusalConfig(
                model=state["source"].config,
                prompts=generalise.prompt_sources(n, n, n, 0, 0),
                output=str(demo.out / "refusal"),
                max_new_tokens=cfg.max_new_tokens,
                decode_rows=DECODE_ROWS,
            ),
            lm=state["lm"],
        )

    demo.stage("extract", do_extract)
    demo.stage("weak classifiers", do_weak)
    demo.stage(
        "linear+MLP probes",
        lambda: fit("probes", "linear_mlp.yaml", ["normal", "malicious"]),
        keep_threads=True,
    )
    demo.stage(
        "3-way probe",
        lambda: fit("probes3", "linear.yaml", ["normal", "malicious", "jailbreak"]),
        keep_threads=True,
    )
    demo.stage("jailbreak transfer", do_transfer, keep_threads=True)
    demo.stage("logit lens", do_lens)
    demo.stage("refusal", do_refusal)
    demo.stage("does it generalise", do_generalise, keep_threads=True)
    result = state.pop("generalise", None)
    lingual = state.pop("crosslingual", None)
    state.clear()
    probing_report(demo, feats)
    if result is not None:
        demo.sections.append(generalise.section(result, "generalise", cfg.model))
        demo.sections.append(words.section(result, lingual, "generalise", cfg.model))


# -- alignment side ------------------------------------------------------------------------------------
def alignment_side(demo: Demo) -> None:
    from probing.features.extract import ExtractConfig, extract
    from probing.generation.refusal import RefusalConfig, refusal
    from probing.grafting.run import sweep
    from probing.models import ModelConfig, load_model, resolve_model

    cfg = demo.cfg
    name = cfg.alignment_model
    feats = demo.out / "features" / f"{name}.h5"
    out = demo.out / "alignment"
    state: dict[str, Any] = {}
    n = cfg.alignment_per_class

    def do_load() -> None:
        model = ModelConfig(name=name, dtype=cfg.alignment_dtype)
        state["source"] = resolve_model(model)  # once, for every stage
        state["lm"] = load_model(state["source"])

    demo.stage("alignment model", do_load, optional=True)
    if "lm" not in state:
        return
    lm, model = state["lm"], state["source"].config
    demo.stage(
        "alignment extract",
        lambda: extract(
            ExtractConfig(
                model=model,
                prompts=generalise.prompt_sources(n, n, n, 0, 0),
                output=str(feats),
                template="chat",
                positions="template",  # inst and the template tokens; last = post_m
            ),
            lm=lm,
        ),
    )
    demo.stage(
        "alignment refusal",
        lambda: refusal(
            RefusalConfig(
                model=model,
                prompts=generalise.prompt_sources(n, n, n, 0, 0),
                output=str(out / "refusal"),
                max_new_tokens=cfg.max_new_tokens,
                decode_rows=DECODE_ROWS,
                features=str(feats),  # the verdicts join it as the label set `refused`
            ),
            lm=lm,
        ),
    )

    def do_lens() -> None:
        from probing.lens.run import LensConfig, lens

        lens(LensConfig(features=str(feats), output=str(out / "lens")), tokenizer=lm.tokenizer)

    demo.stage("alignment lens", do_lens)
    demo.stage(
        "grafting sweep",
        lambda: sweep(
            GraftConfig(
                features=str(feats),
                source="paired",
                limit=cfg.graft_prompts,
                layer_stride=cfg.graft_stride,
                max_new_tokens=cfg.max_new_tokens,
                rows_per_pass=DECODE_ROWS,
                output=str(out / "graft"),
            ),
            lm=lm,
        ),
    )
    state.clear()

    def do_locate() -> None:
        from probing.directions.config import DirectionsConfig
        from probing.directions.locate import zhao_or_zhou
        from probing.directions.run import directions

        found = directions(
            DirectionsConfig(
                features=str(feats), output=str(out / "directions"), locate=["jailbreak"]
            )
        )
        state["located"] = zhao_or_zhou(found["located"], found["result"])

    demo.stage("jailbreak located", do_locate, optional=True)
    alignment_report(demo, f"{name} ({model.dtype})", out, state.get("located"))


def compare_side(demo: Demo) -> None:
    from probing.compare.run import CompareConfig, run_compare
    from probing.prompts import PromptSource

    out = demo.out / "compare"

    def do_compare() -> None:
        n = demo.cfg.compare_per_class
        cfg = load_config(CompareConfig, CONFIGS / "compare" / "default.yaml", "probing compare")
        cfg.prompts = [
            PromptSource(path="normal", limit=n),
            PromptSource(path="malicious", limit=n),
        ]
        cfg.output_dir = str(out)
        cfg.features_dir = str(demo.out / "features" / "compare")
        run_compare(cfg)

    demo.stage("compare", do_compare, optional=True)
    if (out / "compare.md").exists():  # its image links are relative to its own folder
        demo.sections.append(
            (out / "compare.md").read_text().replace("](compare_grid", "](compare/compare_grid")
        )


def run_demo(cfg: DemoConfig) -> Path:
    check_output_folder(cfg.output)  # before the first model loads
    if cfg.threads is not None and cfg.threads < 1:
        raise ProbingError(f"--threads must be >= 1 (or left out), got {cfg.threads}")
    demo = Demo(cfg)
    probing_side(demo)
    if cfg.alignment:
        alignment_side(demo)
    if cfg.compare:
        compare_side(demo)
    path = write_report(demo)
    log.info("demo finished in %.0f s: %s", sum(demo.timings.values()), path)
    return path
