"""``predictions.csv`` of ``probing predict``: one line per (row, probe, layer) with ``p_<class>``.

The columns are ``prompt_index,row,split,label,probe,layer,p_<class>...``: the prompt, split and label
come from the data module's ``describe_rows`` when it has one (else only the row and its label).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
CSV_NAME = "predictions.csv"


def write_predictions(
    path: Path,
    pred: dict[str, torch.Tensor],
    probes: Sequence[str],
    layers: Sequence[int],
    class_names: Sequence[str],
    describe_rows: Callable[[list[int]], dict[str, list[Any]]] | None = None,
) -> Path:
    """Write the probabilities ``pred[probe]`` ``[N, L, C]`` of the rows ``pred["rows"]``; returns ``path``.

    ``pred["label"]`` holds the class indices. Rows repeated by DDP padding are written once, in row
    order.
    """
    rows = pred["rows"].tolist()
    first: dict[int, int] = {}
    for i, r in enumerate(rows):  # DDP pads with repeated rows: keep each row once
        first.setdefault(r, i)
    order = sorted(first.values(), key=lambda i: rows[i])
    desc = describe_rows([rows[i] for i in order]) if describe_rows is not None else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["prompt_index", "row", "split", "label", "probe", "layer"]
            + [f"p_{c}" for c in class_names]
        )
        for k, i in enumerate(order):
            head = (
                [desc["prompt_index"][k], rows[i], desc["split"][k], desc["label"][k]]
                if desc
                else ["", rows[i], "", class_names[int(pred["label"][i])]]
            )
            for name in probes:
                probs = pred[name][i].tolist()
                for j, layer in enumerate(layers):
                    writer.writerow([*head, name, layer, *(f"{p:.6g}" for p in probs[j])])
    log.info("predictions for %d rows: %s", len(order), path)
    return path
