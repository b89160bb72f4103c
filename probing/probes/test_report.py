"""What a probe run's test stage writes (rank zero): ``per_layer_metrics.csv``/``.json`` and the plot,
the text baseline beside the layers, ``per_source_metrics.csv`` and ``above_words.csv`` with one sentence
per probe on where its layers beat the prompt's words."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from probing.features.positions import position_names
from probing.probes import above_words, report, wandb_utils
from probing.probes.metrics import layer_metrics
from probing.probes.per_source import COLUMNS, per_source_results, text_baseline, write_per_source
from probing.probes.text import TEXT

log = logging.getLogger(__name__)
BOOTSTRAP = 1000  # paired resamples behind above_words.csv


def text_rows(text: dict[str, Any], dm: Any, split: str) -> list[dict[str, Any]]:
    """The text baseline's ``per_layer_metrics`` rows (empty ``layer``) on the validation and test
    splits (a transfer file has no prompts of its own read here: no row)."""
    rows = []
    for name in ("val", "test"):
        probs = torch.as_tensor(text[name])
        if split == "transfer" and name == "test" or not len(probs):
            continue
        y = torch.as_tensor(dm.sources["main"].y[dm.split_pos[name]])
        m = layer_metrics(probs[:, None, :], y)
        rows.append({"layer": None, "probe": TEXT, "split": "val" if name == "val" else split,
                     **{k: float(v[0]) for k, v in m.items()}})  # fmt: skip
    return rows


def write_test_report(
    module: Any, dm: Any, directory: Path, rows: list[dict[str, Any]], info: dict[str, Any],
    split: str, title: str,
) -> Path:  # fmt: skip
    """Write the test report of ``module`` on the data ``dm`` into ``directory`` (rank zero only);
    returns it."""
    trainer = module.trainer
    text = text_baseline(dm) if module.hparams.get("text_baseline", True) else None
    if text is not None:
        rows = rows + text_rows(text, dm, split)
    compare_with = module.hparams.compare_with or []
    _, _, png = report.write_report(directory, rows, info, split, title, compare_with)
    columns = [c for c in (*report.COLUMNS, *report.CI_COLUMNS) if c in rows[0]]
    wandb_utils.log_table(trainer, "per_layer_metrics", columns, rows)
    wandb_utils.log_image(trainer, "accuracy_per_layer", png)
    per_source, above = per_source_results(module, dm, text=text, bootstrap=BOOTSTRAP)
    if write_per_source(per_source, directory):
        wandb_utils.log_table(trainer, "per_source_metrics", COLUMNS, per_source)
    if above:
        path = above_words.write_above_words(above, directory)
        wandb_utils.log_table(trainer, "above_words", above_words.COLUMNS, above)
        for probe in module.probe_names:
            for test in dict.fromkeys(r["test"] for r in above):
                got = [r for r in above if r["test"] == test]
                log.info("%s", above_words.sentence(got, probe, "auroc", f", {test}"))
        if position_names(dm.meta)[dm.position] == "mean" and 0 in dm.layers:
            log.info("layer 0 at the mean position is a bag of token embeddings: the lexical "
                     "control among the layers")  # fmt: skip
        log.info("above the words: %s", path)
    return directory
