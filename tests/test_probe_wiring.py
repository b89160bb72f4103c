"""Lightning-shaped probes: what a probe takes from the data is given at instantiation, files are
written by its callbacks, and a checkpoint keeps the split's rows for the monitor."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)

from probing.data import ActivationDataModule
from probing.errors import ProbingError
from probing.probes import LinearProbe
from probing.probes.callbacks import ProbePredictionWriter, ProbeReports


@pytest.fixture(scope="module")
def sourced(tmp_path_factory):
    """Four prompt sources, two of them held out by the probes below."""
    rng = np.random.default_rng(0)
    src = np.repeat(np.arange(4), 60)
    y = np.isin(src, [2, 3]).astype(np.int64)
    x = rng.standard_normal((len(src), 3, 8)).astype(np.float32) * 3 + 5
    x[y == 1, 2] += 6.0
    names = ["normal", "normal-held", "malicious", "malicious-held"]
    meta = {"sources": [{"path": n, "name": n} for n in names]}
    path = tmp_path_factory.mktemp("wiring") / "f.h5"
    return make_feature_file(path, hidden=x, labels=y, sources=src, meta=meta)


def trainer(root, **kwargs):
    return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=str(root), **kwargs)  # fmt: skip


class OnlyLoaders(L.LightningDataModule):
    """The data's loaders and nothing else: a probe that read ``trainer.datamodule`` would fail."""

    def __init__(self, dm):
        super().__init__()
        self.train_dataloader, self.val_dataloader = dm.train_dataloader, dm.val_dataloader
        self.predict_dataloader = dm.predict_dataloader


@pytest.mark.parametrize("batch_size", [16, "full"])
def test_probe_takes_everything_at_instantiation(sourced, tmp_path, batch_size):
    L.seed_everything(0, verbose=False)
    held = ["normal-held", "malicious-held"]
    dm = ActivationDataModule(str(sourced), batch_size=batch_size, holdout_sources=held)
    args = dm.probe_args()
    probe = LinearProbe(**args, lr=0.05)
    mean, std = dm.stats
    torch.testing.assert_close(probe.input_mean, torch.as_tensor(mean))
    torch.testing.assert_close(probe.input_std, torch.as_tensor(std))
    assert probe.hparams.feature_meta["model"] == "synthetic-model"
    assert "input_stats" not in probe.hparams and "full_batch" not in probe.hparams
    t = trainer(tmp_path, max_epochs=3, enable_checkpointing=False)
    dm.setup()
    t.fit(probe, datamodule=OnlyLoaders(dm))
    assert probe.full_batch == (batch_size == "full")
    assert probe.val_results["linear"]["accuracy"][2] > 0.9
    # raw activations through the kept statistics = the standardised rows through the heads
    raw = torch.stack([torch.from_numpy(dm.read_layer(i)[:5]) for i in range(3)], 1)
    with torch.no_grad():
        got = probe.raw_logits(raw)["linear"]
        torch.testing.assert_close(got, probe(dm.sources["main"].x[:5])["linear"])


def test_stats_of_another_shape_are_refused(sourced):
    dm = ActivationDataModule(str(sourced))
    args = {**dm.probe_args(), "input_stats": (np.zeros((2, 8)), np.ones((2, 8)))}
    with pytest.raises(ProbingError, match="input_stats of shape"):
        LinearProbe(**args)


def test_full_batch_probe_on_mini_batch_data_says_what_to_change(sourced, tmp_path):
    dm = ActivationDataModule(str(sourced), batch_size=16)
    probe = LinearProbe(**{**dm.probe_args(), "full_batch": True})
    with pytest.raises(ProbingError, match="batch_size='full'"):
        trainer(tmp_path, max_epochs=1, enable_checkpointing=False).fit(probe, datamodule=dm)


def test_callbacks_write_the_files(sourced, tmp_path):
    L.seed_everything(0, verbose=False)
    dm = ActivationDataModule(str(sourced), batch_size=32)
    probe = LinearProbe(**dm.probe_args(), lr=0.05, text_baseline=False)
    kinds = {type(c) for c in probe.configure_callbacks()}
    assert kinds == {ProbeReports, ProbePredictionWriter}
    t = trainer(tmp_path, max_epochs=2, enable_checkpointing=False)
    t.fit(probe, datamodule=dm)
    t.test(probe, datamodule=dm, verbose=False)
    assert (tmp_path / "per_layer_metrics.csv").is_file()
    assert set(probe.test_results) == {"linear"}
    out = t.predict(probe, datamodule=dm)
    lines = (tmp_path / "predictions.csv").read_text().splitlines()
    assert len(lines) == 1 + len(dm.sources["main"].rows) * 3  # one per row and layer
    assert sum(len(o["rows"]) for o in out) == len(dm.sources["main"].rows)
    # without the data module the probe still tests; only the report is skipped (said once)
    t.test(probe, dataloaders=dm.test_dataloader(), verbose=False)


def test_checkpoint_keeps_split_rows_and_the_monitor_reads_them(sourced, tmp_path, monkeypatch):
    from probing.monitor import labelled
    from probing.monitor.probe import DATA_STATE_KEY, load_probe

    L.seed_everything(0, verbose=False)
    held = ["normal-held", "malicious-held"]
    dm = ActivationDataModule(str(sourced), batch_size=32, holdout_sources=held)
    probe = LinearProbe(**dm.probe_args(), lr=0.05)
    t = trainer(tmp_path, max_epochs=1, enable_checkpointing=False)
    t.fit(probe, datamodule=dm)
    ckpt = tmp_path / "p.ckpt"
    t.save_checkpoint(ckpt)
    main = dm.sources["main"].rows
    expected = {name: np.sort(main[pos]) for name, pos in dm.split_pos.items()}
    expected["heldout"] = np.sort(dm.sources["heldout"].rows)
    loaded = load_probe(ckpt)
    assert set(loaded.split_rows) == set(expected)
    for name, rows in expected.items():
        np.testing.assert_array_equal(loaded.split_rows[name], rows)

    def no_rebuild(*_a, **_k):
        raise AssertionError("the data module was rebuilt")

    monkeypatch.setattr(labelled, "rebuilt_split_rows", no_rebuild)
    rows, what = labelled.split_rows(loaded, sourced, "val", 240)
    np.testing.assert_array_equal(rows, expected["val"])
    rows, what = labelled.split_rows(loaded, sourced, "heldout", 240)
    assert what == "held-out sources normal-held, malicious-held"
    monkeypatch.undo()

    # a checkpoint written before the split was saved: rebuilt from its data options, same rows
    raw = torch.load(ckpt, weights_only=True)
    del raw[DATA_STATE_KEY]["split_rows"]
    old = tmp_path / "old.ckpt"
    torch.save(raw, old)
    old_probe = load_probe(old)
    assert old_probe.split_rows is None
    for name in ("train", "val", "test", "heldout"):
        rows, _ = labelled.split_rows(old_probe, sourced, name, 240)
        from_new, _ = labelled.split_rows(loaded, sourced, name, 240)
        np.testing.assert_array_equal(rows, from_new)


def test_split_rows_that_lie_are_refused_in_one_line(sourced, tmp_path, capsys):
    from probing.cli import main
    from probing.monitor.probe import DATA_STATE_KEY

    dm = ActivationDataModule(str(sourced), batch_size=32)
    t = trainer(tmp_path, max_epochs=1, enable_checkpointing=False)
    t.fit(LinearProbe(**dm.probe_args()), datamodule=dm)
    ckpt = tmp_path / "p.ckpt"
    t.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=True)
    raw[DATA_STATE_KEY]["split_rows"]["val"] = torch.tensor([3, 3, 9999])
    torch.save(raw, ckpt)
    argv = ["monitor", "--ckpt", str(ckpt), "--eval", "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert last.startswith("probing monitor: error: p.ckpt records val rows that are not distinct")
    assert "Traceback" not in err
