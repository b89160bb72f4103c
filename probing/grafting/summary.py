"""Intervals for a grafting sweep's refusal rates, from its per-prompt verdicts.

Each condition's refusal rate gets its Wilson 95 % interval (``refusal_low``, ``refusal_high``); each
grafted layer and the real jailbreaks get their change against the ungrafted prompts
(``refusal_change`` with ``change_low``, ``change_high``): paired per prompt for a graft (the same
prompts ran with and without it), independent for jailbreaks (other prompts).
"""

from __future__ import annotations

import logging
from typing import Any

from probing.generation.intervals import (
    independent_change,
    paired_change,
    shown,
    shown_change,
    wilson,
)
from probing.grafting.sweep import SweepResult

log = logging.getLogger(__name__)
INTERVAL_COLUMNS = ("refusal_low", "refusal_high", "refusal_change", "change_low", "change_high")


def _refused(rows: list[dict[str, Any]], condition: str, layer: Any) -> list[bool]:
    mine = [r for r in rows if r["condition"] == condition and r["layer"] == layer]
    return [r["verdict"] == "refusal" for r in sorted(mine, key=lambda r: r["row"])]


def _with_columns(entry: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``entry`` with ``extra`` placed right after its ``refusal_rate``."""
    out: dict[str, Any] = {}
    for key, value in entry.items():
        out[key] = value
        if key == "refusal_rate":
            out.update(extra)
    return out


def add_intervals(result: SweepResult) -> None:
    """Add the interval columns to every row of ``result.summary`` (in place)."""
    base = _refused(result.rows, "ungrafted", "")
    summary = []
    for entry in result.summary:
        refused = _refused(result.rows, entry["condition"], entry["layer"])
        low, high = wilson(sum(refused), len(refused))
        extra: dict[str, Any] = {"refusal_low": low, "refusal_high": high}
        change: tuple[Any, Any, Any] = ("", "", "")
        if entry["condition"] == "grafted":
            change = paired_change(refused, base)
        elif entry["condition"] != "ungrafted":
            change = independent_change(sum(refused), len(refused), sum(base), len(base))
        extra.update(zip(("refusal_change", "change_low", "change_high"), change, strict=True))
        summary.append(_with_columns(entry, extra))
    result.summary[:] = summary
    for s in summary:
        if s["condition"] == "ungrafted":
            continue
        where = f"layer {s['layer']}" if s["condition"] == "grafted" else s["condition"]
        log.info(
            "%s: refusal %s, change vs ungrafted %s",
            where,
            shown(s["refusal_rate"], s["refusal_low"], s["refusal_high"]),
            shown_change(s["refusal_change"], s["change_low"], s["change_high"]),
        )


def sentence(summary: list[dict[str, Any]], donor: str = "normal prompts' states") -> str:
    """One plain sentence on what grafting did to refusals, from summary rows (as written or read
    back from ``graft_summary.csv``): a layer counts only when its change's interval excludes 0."""

    def num(row: dict[str, Any], key: str) -> float:
        value = row.get(key, "")
        return float(value) if value not in ("", None) else float("nan")

    base = next((r for r in summary if r["condition"] == "ungrafted"), None)
    grafted = [r for r in summary if r["condition"] == "grafted"]
    if base is None or not grafted:
        return "No grafted layers to report."
    rate = shown(num(base, "refusal_rate"), num(base, "refusal_low"), num(base, "refusal_high"))

    def listed(rows: list[dict[str, Any]]) -> str:
        return ", ".join(
            f"{r['layer']} ({shown_change(*(num(r, k) for k in INTERVAL_COLUMNS[2:]))})"
            for r in rows
        )

    lower = [r for r in grafted if num(r, "change_high") < 0]
    higher = [r for r in grafted if num(r, "change_low") > 0]
    text = f"Ungrafted, {rate} of {base['n']} harmful prompts are refused. Grafting {donor} "
    if lower:
        text += f"lowers refusals at layer(s) {listed(lower)}"
        text += f" and raises them at {listed(higher)}." if higher else "."
    elif higher:
        text += f"lowers refusals at no layer; it raises them at {listed(higher)}."
    else:
        text += "changes refusals at no layer by more than its 95 % interval allows."
    jailbreak = next((r for r in summary if r["condition"] == "jailbreak"), None)
    if jailbreak is not None:
        jb = shown(
            num(jailbreak, "refusal_rate"),
            num(jailbreak, "refusal_low"),
            num(jailbreak, "refusal_high"),
        )
        text += f" Real jailbreaks are refused at {jb}."
    return text
