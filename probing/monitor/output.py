"""What ``probing monitor`` writes: screenings, guarded answers, or the evaluation report (a table per
layer with the text baseline and the "above the words" sentences, or JSON)."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from probing.monitor.config import MonitorConfig
from probing.monitor.screen import Guarded, Screening

log = logging.getLogger(__name__)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _fmt(value: Any) -> str:
    return (
        "   n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.3f}"
    )


def eval_table(report: dict[str, Any]) -> str:
    """The evaluation report as text: one line per layer, then the chosen layer's classes."""
    fprs = [k.removeprefix("tpr@") for k in report["chosen"] if k.startswith("tpr@")]
    cal_keys = list(report["chosen"]["calibrated"])
    head = f"{'layer':>5}  {'AUROC':>6}  " + "  ".join(f"TPR@{f:<5}" for f in fprs)
    head += "".join(f"  TPR/FPR@thr({k})" for k in cal_keys)
    lines = [
        f"{report['model']} - {report['probe']} probe, score {report['score']}, "
        f"eval set: {report['eval_set']}",
        head,
    ]
    for e in report["layers"]:
        mark = " *" if e["layer"] == report["chosen_layer"] else ""
        line = f"{e['layer']:>5}  {_fmt(e['auroc']):>6}  " + "  ".join(
            f"{_fmt(e[f'tpr@{f}']):>9}" for f in fprs
        )
        for k in cal_keys:
            c = e["calibrated"][k]
            line += f"  {_fmt(c['tpr']):>7}/{_fmt(c['fpr'])}{'':>4}"
        lines.append(line + mark)
    text = report.get("text_baseline")
    if text is not None:
        line = f"{'text':>5}  {_fmt(text['auroc']):>6}  " + "  ".join(
            f"{_fmt(text[f'tpr@{f}']):>9}" for f in fprs
        )
        for k in cal_keys:
            c = text["calibrated"].get(k, {})
            line += f"  {_fmt(c.get('tpr'))}/{_fmt(c.get('fpr'))}{'':>4}"
        lines.append(line + "   (text baseline: the prompt's words, no layer)")
    if report.get("above_words"):
        lines += [report["above_words"]["sentence"], report["above_words"]["sentence_tpr"]]
    for key, what in (("per_class", "class"), ("per_source", "source")):
        groups = report["chosen"].get(key) or {}
        if not groups:
            continue
        lines.append(f"per {what} at layer {report['chosen_layer']} (*):")
        width = max(12, *(len(n) for n in groups))
        for name, info in groups.items():
            kind = "harmful" if info.get("positive") else "safe"
            parts = [f"n={info['rows']} {kind}", f"mean score {_fmt(info['mean_score'])}"]
            parts += [f"{k} {_fmt(v)}" for k, v in info.items() if k.startswith("flagged@")]
            if "auroc_vs_negative" in info:
                parts.append(f"AUROC vs negative {_fmt(info['auroc_vs_negative'])}")
            lines.append(f"  {name:<{width}} " + ", ".join(parts))
    return "\n".join(lines)


def _screen_line(s: Screening) -> str:
    probs = " ".join(f"p({c})={p:.4f}" for c, p in s.probs.items())
    text = " ".join(s.prompt.split())
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"{s.decision:<5} score={s.score:.4f} layer={s.layer} {probs}  {text}"


def write_results(
    result: list[Screening] | list[Guarded] | dict[str, Any], output: str | None, as_json: bool
) -> None:
    """Screenings, guarded answers or the evaluation report, as text or JSON (``as_json``), to
    ``output`` or standard output."""
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    out = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        if isinstance(result, dict):
            out.write(
                json.dumps(_clean(result), indent=1) + "\n"
                if as_json
                else eval_table(result) + "\n"
            )
        else:
            for r in result:
                if as_json:
                    out.write(json.dumps(_clean(r.as_dict()), ensure_ascii=False) + "\n")
                elif isinstance(r, Guarded):
                    out.write(
                        _screen_line(r.screening) + "\n  -> " + r.response.replace("\n", " ") + "\n"
                    )
                else:
                    out.write(_screen_line(r) + "\n")
    finally:
        if output:
            out.close()
    if output:
        log.info("wrote %s", Path(output))


def report(cfg: MonitorConfig, result: list[Screening] | list[Guarded] | dict[str, Any]) -> None:
    """``probing monitor``'s ending: :func:`write_results` where ``cfg`` says."""
    write_results(result, cfg.output, cfg.json)
