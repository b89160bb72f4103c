"""What `probing graft` does: its options, parsed without torch (``--help`` stays fast)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from probing.config import parse_config
from probing.layers import LayerSpec
from probing.models.config import ModelOverride


@dataclass
class GraftConfig:
    """A grafting sweep.

    Args:
        features: feature file of the model to graft (donor states and target prompts come from it).
        model: how to load the feature file's model (``--model.name``, ``--model.device``,
            ``--model.dtype``, ``--model.trust_remote_code``); default: as it was extracted, without
            remote code. The loaded model is checked against the file.
        source: donor state: ``paired`` (the paper's way: each target prompt gets the state of its
            own prompt of ``source_class``, a seeded draw), the ``class_mean`` of ``source_class``
            (one average vector: no prompt's state, see docs/grafting.md), one ``row`` of the file,
            or a ``vector`` file (.npy, ``[D]`` or ``[layers, D]``).
        source_class: class whose states are grafted (``source: class_mean`` or ``paired``).
        source_row: row of the feature file whose states are grafted (``source: row``).
        vector: .npy file with the donor (``source: vector``).
        position: the prompt token grafted, by its stored name: ``last`` (the paper's), or ``inst``
            / ``post_j`` of a ``--positions template`` file; donors are read at the same position.
        target_class: class of the prompts grafted into.
        jailbreak_class: class of real jailbreak prompts for comparison (skipped if not in the file).
        limit: prompts per class (a seeded sample).
        seed: seed of the sample.
        layers: layers to graft at: an index, a list or ``"start:stop[:step]"`` (default: every
            ``layer_stride``-th layer from 1).
        layer_stride: spacing of the default layers.
        max_new_tokens: greedy continuation length judged for refusal.
        batch_size: prompts per prefill pass (length-sorted; their shared prefix runs once for all
            conditions).
        rows_per_pass: prompt × condition rows decoded together (the conditions of a prompt batch
            share its prefix's KV cache).
        probe_ckpt: a trained probe checkpoint; its predictions after the grafted layer give the flip rate.
        positive_class: the probe's class that counts as flagged.
        judge: refusal keyword list (default configs/judge/keywords.yaml).
        emotions: emotion token lists (default configs/emotion/default.yaml).
        output: folder for graft_results.csv, graft_summary.csv, graft_sweep.png.
        progress: show a progress bar (prompt × condition rows, with their rate).
    """

    features: str
    model: ModelOverride = field(default_factory=ModelOverride)
    source: Literal["paired", "class_mean", "row", "vector"] = "paired"
    source_class: str = "normal"
    source_row: int = 0
    vector: str | None = None
    position: str = "last"
    target_class: str = "malicious"
    jailbreak_class: str | None = "jailbreak"
    limit: int = 40
    seed: int = 0
    layers: LayerSpec | None = None
    layer_stride: int = 1
    max_new_tokens: int = 20
    batch_size: int = 8
    rows_per_pass: int = 64
    probe_ckpt: str | None = None
    positive_class: str = "malicious"
    judge: str | None = None
    emotions: str | None = None
    output: str = "runs/graft"
    progress: bool = True


def parse(argv: Sequence[str]) -> GraftConfig:
    return parse_config(GraftConfig, argv, "probing graft", "Logit-grafting sweep over layers.")
