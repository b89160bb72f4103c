"""Refusal verdicts as a label set of a feature file: ``probing refusal --features FILE``.

The verdicts of ``probing refusal`` (one per prompt, in prompt order: ``refusal.csv`` beside
``refusal_summary.json``) join a feature file of the same model, template and prompts as the label
set ``refused`` (dataset ``label_refused``: 1 refused, 0 complied, -1 unclear, left out). The model
is checked by the identity rule (:mod:`probing.features.identity`), the rows by prompt text and
class: a feature row's ``prompt_index`` is its prompt's place in the verdicts. Anything else is
refused with one line and the file is left as it was.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probing.errors import ProbingError
from probing.features.identity import VERDICT_MATCH_KEYS, identity_mismatch, shown
from probing.features.labels import add_label_set
from probing.features.store import FeatureFile

log = logging.getLogger(__name__)

LABEL_SET = "refused"
CLASS_NAMES = ["complied", "refused"]  # the names of 0 and 1
VALUES = {"refusal": 1, "compliance": 0, "unclear": -1}
CSV_NAME, SUMMARY_NAME = "refusal.csv", "refusal_summary.json"


@dataclass
class Verdicts:
    """Per prompt (prompt order): its class name, text and the judge's verdict; ``identity``: the
    model and prompt format they come from (``VERDICT_MATCH_KEYS``); ``where``: for messages."""

    label: list[str]
    prompt: list[str]
    verdict: list[str]
    identity: dict[str, Any]
    where: str
    provenance: dict[str, Any] = field(default_factory=dict)


def verdict_identity(model_meta: dict[str, Any], template: str, system_prompt: str) -> dict:
    """What the verdicts' model and prompt format are, in the feature files' terms."""
    return {**model_meta, "template": template, "system_prompt": system_prompt}


def read_verdicts(folder: str | Path) -> Verdicts:
    """An earlier ``probing refusal`` run's verdicts (its ``--output`` folder)."""
    folder = Path(folder)
    table, summary = folder / CSV_NAME, folder / SUMMARY_NAME
    missing = [p.name for p in (table, summary) if not p.is_file()]
    if missing:
        raise ProbingError(
            f"--verdicts {folder} has no {' or '.join(missing)}; give the --output folder of a "
            "`probing refusal` run"
        )
    try:
        meta = json.loads(summary.read_text(encoding="utf-8-sig"))
        with open(table, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError, csv.Error) as err:
        raise ProbingError(f"--verdicts {folder}: cannot read it ({err})") from None
    need = {"label", "prompt", "verdict"}
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise ProbingError(f"--verdicts {summary} names no model; it is not a refusal summary")
    if rows and not need <= set(rows[0]):
        raise ProbingError(f"--verdicts {table} has no columns {sorted(need - set(rows[0]))}")
    bad = sorted({r["verdict"] for r in rows} - set(VALUES))
    if bad:
        raise ProbingError(
            f"--verdicts {table} has verdicts {bad[:3]}; expected one of {sorted(VALUES)}"
        )
    return Verdicts(
        label=[r["label"] for r in rows],
        prompt=[r["prompt"] for r in rows],
        verdict=[r["verdict"] for r in rows],
        identity=verdict_identity(meta["model"], meta.get("template"), meta.get("system_prompt")),
        where=str(folder),
        provenance={k: meta.get(k) for k in ("judge", "max_new_tokens", "decoding", "created")},
    )


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def match_rows(ff: FeatureFile, verdicts: Verdicts) -> np.ndarray:
    """Per feature row the verdict of its prompt (1, 0, -1); refuses prompts that do not match."""
    skipped = sum(int(v) for v in (ff.meta.get("skipped") or {}).values())
    total = ff.num_rows + skipped
    if len(verdicts.prompt) != total:
        raise ProbingError(
            f"--features {ff.path} was extracted from {total} prompts ({ff.num_rows} rows, {skipped}"
            f" skipped), the verdicts in {verdicts.where} are of {len(verdicts.prompt)}: give the "
            "same --prompts (sources, limits, order) to both"
        )
    index = np.asarray(ff.column("prompt_index"), dtype=np.int64)
    prompts, labels = ff.column("prompt"), ff.labels
    names = ff.label_names
    for row, i in enumerate(index):
        ours, theirs = (prompts[row], names[labels[row]]), (verdicts.prompt[i], verdicts.label[i])
        if ours != theirs:
            raise ProbingError(
                f"--features {ff.path} and the verdicts in {verdicts.where} differ at prompt {i}: "
                f"{_short(ours[0])} ({ours[1]}) there, {_short(theirs[0])} ({theirs[1]}) in the "
                "verdicts; give the same --prompts to both"
            )
    return np.asarray([VALUES[verdicts.verdict[i]] for i in index], dtype=np.int64)


def join_verdicts(features: str | Path, verdicts: Verdicts) -> np.ndarray:
    """Check and store ``verdicts`` as the label set ``refused`` of ``features``; the values."""
    with FeatureFile(features) as ff:
        diff = identity_mismatch(ff.meta, verdicts.identity, VERDICT_MATCH_KEYS)
        if diff is not None:
            key, a, b = diff
            raise ProbingError(
                f"--features {ff.path} comes from another model or prompt format than the "
                f"verdicts: {key}={shown(a)!r} there, {shown(b)!r} for the verdicts; give features "
                "and verdicts of one model, --template and --system_prompt"
            )
        values = match_rows(ff, verdicts)
        fingerprint = ff.meta.get("fingerprint")
    attrs = {"source": verdicts.where, **{k: v for k, v in verdicts.provenance.items() if v}}
    add_label_set(features, LABEL_SET, values, CLASS_NAMES, attrs, fingerprint)
    counts = {n: int((values == v).sum()) for n, v in (("refused", 1), ("complied", 0))}
    log.info(
        "added label set %r to %s: %d refused, %d complied, %d unclear (left out); train on it "
        "with --data.label %s",
        LABEL_SET, features, counts["refused"], counts["complied"],
        int((values < 0).sum()), LABEL_SET,
    )  # fmt: skip
    return values
