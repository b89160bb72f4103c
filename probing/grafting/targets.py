"""What a grafting sweep reads from the feature file: its model check, class rows and mean states
(donors), and the target prompts' token ids as extraction tokenized them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from probing.errors import ProbingError
from probing.features.identity import loaded_model_identity, model_mismatch, shown
from probing.features.store import FeatureFile
from probing.models.load import LoadedModel
from probing.prompts.render import tokenize_rendered


def check_same_model(ff: FeatureFile, lm: LoadedModel) -> None:
    """Grafting needs donor states from the model being grafted."""
    meta = ff.meta
    mine = loaded_model_identity(lm)
    diff = model_mismatch(meta, mine)
    if diff is not None:
        key, want, found = diff
        raise ProbingError(
            f"{ff.path} holds states of model {meta.get('model')!r} ({ff.num_layers} layers × "
            f"{ff.hidden_size}), but the loaded model is {mine['model']!r} ({mine['num_layers']} × "
            f"{mine['hidden_size']}; {key} {shown(want)} vs {shown(found)}); extract features with "
            "the model you graft, or set --model.name to the file's model"
        )
    check_last_position(ff)


def check_last_position(ff: FeatureFile) -> None:
    """Donor states are the last prompt token's (what a graft replaces); no model needed."""
    if ff.meta.get("positions") != "last":
        raise ProbingError(
            f"{ff.path} stores positions={ff.meta.get('positions')!r}; grafting replaces the last "
            "prompt token's state, so extract donors with --positions last"
        )


def class_rows(ff: FeatureFile, name: str, option: str = "--source_class") -> np.ndarray:
    names = ff.label_names
    if name not in names:
        raise ProbingError(
            f"{option} {name!r} is not a class of {ff.path} (its classes: {', '.join(names)})"
        )
    return np.flatnonzero(ff.labels == names.index(name))


def class_mean(ff: FeatureFile, name: str) -> torch.Tensor:
    """Mean last-token state ``[L, D]`` of a class, every layer."""
    rows = class_rows(ff, name)
    return torch.from_numpy(np.stack([ff.layer(i)[rows].mean(0) for i in range(ff.num_layers)]))


def target_sequences(
    ff: FeatureFile, rows: np.ndarray, tokenizer: Any
) -> tuple[list[list[int]], list[str]]:
    """Token ids (as extraction tokenized them) and prompts of feature-file rows."""
    rendered = ff.column("rendered")
    prompts = ff.column("prompt")
    ids, _ = tokenize_rendered(tokenizer, [rendered[i] for i in rows])
    return ids, [prompts[i] for i in rows]
