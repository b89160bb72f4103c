"""`probing refusal --config configs/refusal/NAME.yaml`: how often does the model refuse, per class?

Greedy continuations of labelled prompts, judged by keywords. The alignment analyses (refusal, emotion
association, grafting) only mean something on a model that refuses harmful requests and answers
normal ones; this reports whether it does. Writes ``refusal.csv`` (per prompt; continuations cut to
``CONTINUATION_CHARS`` characters, so no harmful answer is stored) and ``refusal_summary.json``.
With ``--features FILE`` the verdicts also join that feature file as the label set ``refused``
(:mod:`probing.generation.verdicts`); ``--verdicts DIR`` joins an earlier run's without generating.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import probing
from probing.errors import ProbingError
from probing.features.store import FeatureFile
from probing.generation.generate import generate
from probing.generation.intervals import wilson
from probing.generation.judge import KeywordJudge, default_judge_path, load_judge
from probing.generation.refusal_config import RefusalConfig
from probing.generation.verdicts import Verdicts, join_verdicts, read_verdicts, verdict_identity
from probing.models.load import LoadedModel, load_model
from probing.outputs import check_output_folder
from probing.prompts.render import render
from probing.prompts.sources import load_prompts

log = logging.getLogger(__name__)

CONTINUATION_CHARS = 80


@dataclass
class RefusalResult:
    label: list[str]
    prompt: list[str]
    continuation: list[str]
    verdict: list[str]
    summary: dict[str, dict[str, Any]]
    model_meta: dict[str, Any] = field(default_factory=dict)
    template: str = ""  # as rendered: chat or raw


def _validate(cfg: RefusalConfig) -> None:
    if cfg.max_new_tokens < 1:
        raise ProbingError(f"--max_new_tokens must be >= 1, got {cfg.max_new_tokens}")
    if cfg.batch_size < 1:
        raise ProbingError(f"--batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.decode_rows < 1:
        raise ProbingError(f"--decode_rows must be >= 1, got {cfg.decode_rows}")
    if cfg.verdicts and not cfg.features:
        raise ProbingError(
            "--verdicts joins an earlier run's verdicts to a feature file; give --features FILE"
        )


def summarize(
    labels: list[str], verdicts: list[str], order: list[str]
) -> dict[str, dict[str, Any]]:
    """Per class: n, refused, rate (refused / n) with its Wilson 95 % interval (low, high),
    complied, unclear."""
    out: dict[str, dict[str, Any]] = {}
    for name in order:
        mine = [v for lab, v in zip(labels, verdicts, strict=True) if lab == name]
        refused = mine.count("refusal")
        out[name] = {
            "n": len(mine),
            "refused": refused,
            "rate": refused / len(mine) if mine else 0.0,
            "low": wilson(refused, len(mine))[0] if mine else None,
            "high": wilson(refused, len(mine))[1] if mine else None,
            "complied": mine.count("compliance"),
            "unclear": mine.count("unclear"),
        }
    return out


def table(summary: dict[str, dict[str, Any]]) -> str:
    width = max([5, *map(len, summary)])
    lines = [f"{'class':<{width}}  {'n':>5}  {'refused':>7}  {'rate':>6}  95% interval"]
    for name, s in summary.items():
        span = f"{s['low']:.0%}–{s['high']:.0%}" if s["n"] else "n/a"
        lines.append(f"{name:<{width}}  {s['n']:>5}  {s['refused']:>7}  {s['rate']:>6.1%}  {span}")
    return "\n".join(lines)


def evaluate_refusal(
    cfg: RefusalConfig, lm: LoadedModel | None = None, judge: KeywordJudge | None = None
) -> RefusalResult:
    """Generate, judge and summarise; ``lm``/``judge`` skip loading them (tests, notebooks)."""
    _validate(cfg)  # model-free checks first: loading and generating take minutes
    judge = judge or load_judge(cfg.judge)
    prompts, labels, _, names = load_prompts(cfg.prompts)
    check_output_folder(cfg.output)
    lm = lm or load_model(cfg.model)
    rendered = render(lm.tokenizer, prompts, cfg.template, cfg.system_prompt)
    gen = generate(
        lm,
        rendered.ids,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        progress=cfg.progress,
        decode_rows=cfg.decode_rows,
        share_head=True,
    )
    verdicts = [judge.verdict(t) for t in gen.text]
    label_names = [names[i] for i in labels]
    return RefusalResult(
        label=label_names,
        prompt=prompts,
        continuation=gen.text,
        verdict=verdicts,
        summary=summarize(label_names, verdicts, names),
        model_meta=lm.meta,
        template=rendered.template,
    )


def write(cfg: RefusalConfig, result: RefusalResult, meta: dict[str, Any]) -> Path:
    folder = Path(cfg.output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProbingError(f"cannot create --output {folder} ({err})") from None
    with open(folder / "refusal.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "prompt", "continuation", "refused", "verdict"])
        for lab, prompt, text, verdict in zip(
            result.label, result.prompt, result.continuation, result.verdict, strict=True
        ):
            short = " ".join(text.split())[:CONTINUATION_CHARS]
            writer.writerow([lab, prompt, short, int(verdict == "refusal"), verdict])
    summary = {
        "classes": result.summary,
        **meta,
        "probing_version": probing.__version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": dataclasses.asdict(cfg),
    }
    (folder / "refusal_summary.json").write_text(
        json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8"
    )
    return folder


def refusal(cfg: RefusalConfig, lm: LoadedModel | None = None) -> RefusalResult | None:
    """Run the evaluation, write the files, log the table. With ``cfg.verdicts``, join those stored
    verdicts into ``cfg.features`` instead (no model, no generation; returns None)."""
    _validate(cfg)
    if cfg.verdicts:
        join_verdicts(cfg.features, read_verdicts(cfg.verdicts))
        return None
    if cfg.features:
        FeatureFile(cfg.features).close()  # a missing or damaged file fails before generating
    judge = load_judge(cfg.judge)
    result = evaluate_refusal(cfg, lm, judge)
    meta = {
        "model": result.model_meta,
        "template": result.template or cfg.template,
        "system_prompt": cfg.system_prompt or "",
        "max_new_tokens": cfg.max_new_tokens,
        "decoding": "greedy",
        "judge": {
            "file": str(Path(cfg.judge).expanduser() if cfg.judge else default_judge_path()),
            **dataclasses.asdict(judge),
        },
        "continuation_chars": CONTINUATION_CHARS,
    }
    folder = write(cfg, result, meta)
    log.info(
        "refusal rate of %s (%s, greedy, %d new tokens, keyword judge):\n%s",
        result.model_meta.get("model"),
        result.model_meta.get("dtype"),
        cfg.max_new_tokens,
        table(result.summary),
    )
    log.info("wrote %s and %s", folder / "refusal.csv", folder / "refusal_summary.json")
    if cfg.features:
        identity = verdict_identity(result.model_meta, meta["template"], meta["system_prompt"])
        verdicts = Verdicts(result.label, result.prompt, result.verdict, identity, str(folder))
        verdicts.provenance = {k: meta[k] for k in ("judge", "max_new_tokens", "decoding")}
        join_verdicts(cfg.features, verdicts)
    return result
