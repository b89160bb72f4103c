"""`probing monitor --ckpt [A, B]`: the layer's held-out-source rule chooses between probes of
different stored positions."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from featurefactory import make_feature_file

from probing.cli import main

NAMES = ["normal", "normal-heldout", "malicious", "malicious-heldout"]


def _file(path, n_per=120, dim=16, seed=2):
    """Position ``inst``: the harmful sources share a direction at layer 2 (it transfers to the
    held-out ones); position ``last``: every source only has its own direction (a shortcut)."""
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((5, dim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    src = np.repeat(np.arange(4), n_per)
    y = np.isin(src, [2, 3]).astype(np.int64)
    x = rng.standard_normal((len(src), 3, 2, dim)).astype(np.float32)
    for s in range(4):
        x[src == s, :, 1] += 6 * dirs[s]
    x[y == 1, 2, 0] += 3 * dirs[4]
    meta = {
        "sources": [{"path": n, "name": n} for n in NAMES],
        "positions": "inst,last",
        "position_names": ["inst", "last"],
        "position_offsets": [1, 0],
    }
    return make_feature_file(path, hidden=x, labels=y, sources=src, meta=meta)


def _train(h5, position, ckpt):
    import lightning as L

    from probing.data import ActivationDataModule
    from probing.probes import LinearProbe

    L.seed_everything(0)
    held = ["normal-heldout", "malicious-heldout"]
    dm = ActivationDataModule(str(h5), holdout_sources=held, batch_size=64, position=position)
    module = LinearProbe(lr=0.05, **dm.probe_args())
    trainer = L.Trainer(max_epochs=15, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(ckpt)
    return ckpt


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("positions")
    h5 = _file(tmp / "f.h5")
    return tmp, _train(h5, "last", tmp / "last.ckpt"), _train(h5, "inst", tmp / "inst.ckpt")


def test_several_checkpoints_the_held_out_rule_chooses_the_position(probes, caplog):
    tmp, last, inst = probes
    out = tmp / "eval.json"
    args = ["monitor", "--ckpt", f"[{last}, {inst}]", "--eval", "--eval_fprs", "[0.05]"]
    with caplog.at_level(logging.INFO, logger="probing"):
        assert main([*args, "--fpr", "0.05", "--json", "--output", str(out)]) == 0
    assert f"--ckpt: chose {inst}" in caplog.text
    assert "(position last)" in caplog.text and "(position inst)" in caplog.text


def test_several_checkpoints_need_layer_auto(probes, capsys):
    tmp, last, inst = probes
    capsys.readouterr()
    assert main(["monitor", "--ckpt", f"[{last}, {inst}]", "--layer", "2", "--eval"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give --layer auto or one --ckpt" in err[0]
