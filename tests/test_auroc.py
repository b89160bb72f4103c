"""The one AUROC (probing.probes.auroc) against scikit-learn, on torch and numpy inputs."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from probing.probes.auroc import auroc, auroc_columns, auroc_ovr


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(60, 4)).astype(np.float64)  # many ties
    positive = rng.random(60) < 0.4
    want = [roc_auc_score(positive, scores[:, j]) for j in range(4)]
    assert auroc_columns(scores, positive) == pytest.approx(want, abs=1e-12)
    got = auroc_ovr(torch.from_numpy(scores).float(), torch.from_numpy(positive))
    assert got.tolist() == pytest.approx(want, abs=1e-12)
    assert auroc(scores[:, 2], positive) == pytest.approx(want[2], abs=1e-12)


def test_auroc_is_nan_with_one_class_or_a_nan_score():
    scores = np.array([[0.1, 0.2], [0.4, math.nan], [0.3, 0.9]])
    assert np.isnan(auroc_columns(scores, np.ones(3, bool))).all()
    got = auroc_columns(scores, np.array([True, False, True]))
    assert got[0] == 0.0 and math.isnan(got[1])
    assert math.isnan(auroc(np.zeros(0), np.zeros(0, bool)))
