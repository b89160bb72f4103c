"""Jailbreak analysis: a probe trained on normal vs malicious, applied per layer to other classes.

For each layer, the share of a class's prompts that the probe flags as the positive class (e.g. the
share of jailbreak prompts still recognised as malicious). A jailbreak that "disturbs" the malicious
representation shows up as a low share at the layers where it works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from probing.errors import ProbingError
from probing.features.store import FeatureFile
from probing.plotting import save_figure, subplots
from probing.probes.checkpoint import check_feature_identity
from probing.probes.module import ProbeModule
from probing.tables import write_csv

COLUMNS = ["probe", "layer", "class", "n", "share_flagged"]


@torch.no_grad()
def flagged_share(
    probe: ProbeModule,
    ff: FeatureFile,
    classes: list[str],
    positive: str = "malicious",
    batch: int = 512,
) -> list[dict[str, Any]]:
    """Rows ``probe, layer, class, n, share_flagged`` for each probe head, layer and class."""
    check_feature_identity(probe, ff.meta, str(ff.path))
    if positive not in probe.class_names:
        raise ProbingError(
            f"the probe's classes are {probe.class_names}; --positive {positive!r} is not one"
        )
    pos = probe.class_names.index(positive)
    labels = ff.labels
    rows: list[dict[str, Any]] = []
    for name in classes:
        if name not in ff.label_names:
            raise ProbingError(
                f"class {name!r} is not in {ff.path} (its classes: {', '.join(ff.label_names)})"
            )
        idx = np.flatnonzero(labels == ff.label_names.index(name))
        hits: dict[str, np.ndarray] = {}
        for lo in range(0, len(idx), batch):
            x = torch.from_numpy(ff.layers(probe.layers, rows=idx[lo : lo + batch]))
            for head, logits in probe.raw_logits(x).items():
                flagged = (logits.argmax(-1) == pos).sum(0).numpy()
                hits[head] = hits.get(head, 0) + flagged
        for head, count in hits.items():
            for j, layer in enumerate(probe.layers):
                rows.append(
                    {
                        "probe": head,
                        "layer": layer,
                        "class": name,
                        "n": len(idx),
                        "share_flagged": float(count[j] / max(len(idx), 1)),
                    }
                )
    return rows


def write(rows: list[dict[str, Any]], out: Path, title: str = "") -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "jailbreak_transfer.csv"
    write_csv(csv_path, rows, COLUMNS, digits=None)
    fig, ax = subplots(figsize=(6.5, 3.6))
    for key in sorted({(r["probe"], r["class"]) for r in rows}):
        sel = [r for r in rows if (r["probe"], r["class"]) == key]
        ax.plot(
            [r["layer"] for r in sel],
            [r["share_flagged"] for r in sel],
            marker="o",
            ms=3,
            label=f"{key[1]} ({key[0]})",
        )
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("share flagged as malicious")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return csv_path, save_figure(fig, out / "jailbreak_transfer.png")
