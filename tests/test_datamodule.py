"""ActivationDataModule: layer/class selection, splits, standardisation, transfer, bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)

from probing.data import ActivationDataModule, stratified_split
from probing.errors import ProbingError

LABELS3 = ["normal", "malicious", "jailbreak"]


@pytest.fixture(scope="module")
def feat(tmp_path_factory):
    d = tmp_path_factory.mktemp("dm")
    labels = np.array([0] * 60 + [1] * 60 + [2] * 30)
    return make_feature_file(d / "three.h5", n=150, num_layers=6, hidden_size=8, label_names=LABELS3,
                             labels=labels, seed=1)  # fmt: skip


def batches(loader):
    return [tuple(t for t in b) for b in loader]


def test_split_is_stratified_seeded_and_disjoint():
    y = np.array([0] * 100 + [1] * 40)
    a = stratified_split(y, (0.7, 0.15, 0.15), seed=3)
    b = stratified_split(y, (0.7, 0.15, 0.15), seed=3)
    c = stratified_split(y, (0.7, 0.15, 0.15), seed=4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=False))
    assert not np.array_equal(a[0], c[0])
    assert sorted(np.concatenate(a).tolist()) == list(range(140))
    assert [int((y[p] == 1).sum()) for p in a] == [28, 6, 6]


def test_batches_layers_and_classes(feat):
    dm = ActivationDataModule(
        str(feat), layers="1:4", classes=["normal", "malicious"], batch_size=32
    )
    assert (dm.num_layers, dm.hidden_size, dm.num_classes, dm.layers) == (6, 8, 2, [1, 2, 3])
    dm.setup("fit")
    x, y, rows = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 3, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.tolist()) <= {0, 1}
    assert sum(len(b[1]) for b in batches(dm.train_dataloader())) == 84  # 70 % of 120 rows


def test_standardisation_uses_train_statistics(feat):
    dm = ActivationDataModule(str(feat), batch_size=1000)
    dm.setup()
    x = dm.sources["main"].x
    train = x[dm.split_pos["train"]]
    torch.testing.assert_close(train.mean(0), torch.zeros(6, 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(train.std(0, unbiased=False), torch.ones(6, 8), atol=1e-4, rtol=0)
    raw = ActivationDataModule(str(feat), standardize=False)
    raw.setup()
    mean, std = dm.stats
    torch.testing.assert_close((raw.sources["main"].x - mean) / std, x, atol=1e-5, rtol=1e-5)


def test_class_map_merges_and_three_way(feat):
    dm = ActivationDataModule(
        str(feat), classes=["normal", "malicious"], class_map={"jailbreak": "malicious"}
    )
    assert dm.num_classes == 2 and int((dm.sources["main"].y == 1).sum()) == 90
    assert ActivationDataModule(str(feat)).class_names == LABELS3


def test_chunked_reads_equal_in_memory(tmp_path):
    path = make_feature_file(tmp_path / "f.h5", n=500, num_layers=3, hidden_size=512, seed=2)
    with h5py.File(path) as f:
        assert f["hidden"].chunks[0] < 500  # several chunks
    mem = ActivationDataModule(str(path), in_memory="always", batch_size=64)
    chunk = ActivationDataModule(str(path), in_memory="never", batch_size=64, num_workers=0)
    for dm in (mem, chunk):
        dm.setup()
    for name in ("train", "val", "test"):
        loader = getattr(mem, f"{name}_dataloader")()
        a = {int(r): (x, y) for b in batches(loader) for x, y, r in zip(*b, strict=False)}
        b = {
            int(r): (x, y)
            for bb in batches(getattr(chunk, f"{name}_dataloader")())
            for x, y, r in zip(*bb, strict=False)
        }
        assert a.keys() == b.keys()
        for r in a:
            torch.testing.assert_close(a[r][0], b[r][0], atol=1e-5, rtol=1e-5)
            assert a[r][1] == b[r][1]


def test_chunked_reads_in_worker_processes(tmp_path):
    path = make_feature_file(tmp_path / "f.h5", n=300, num_layers=2, hidden_size=1024)
    dm = ActivationDataModule(str(path), in_memory="never", num_workers=2, batch_size=50)
    dm.setup()
    assert sum(len(b[1]) for b in dm.train_dataloader()) == 210


def test_transfer_test_file_maps_classes(tmp_path, feat):
    jb = make_feature_file(tmp_path / "jb.h5", n=40, num_layers=6, hidden_size=8, label_names=["jailbreak"],
                           labels=np.zeros(40, int))  # fmt: skip
    dm = ActivationDataModule(str(feat), classes=["normal", "malicious"], class_map={"jailbreak": "malicious"},
                              test_path=str(jb), split=(0.8, 0.2, 0.0))  # fmt: skip
    dm.setup()
    assert dm.test_split_name == "transfer"
    ys = torch.cat([b[1] for b in dm.test_dataloader()])
    assert len(ys) == 40 and set(ys.tolist()) == {1}


def test_transfer_rejects_other_model(tmp_path, feat):
    other = make_feature_file(tmp_path / "o.h5", n=20, num_layers=6, hidden_size=8, label_names=LABELS3,
                              meta={"model": "another-model"})  # fmt: skip
    with pytest.raises(ProbingError, match=r"--data.test_path .*model='another-model'"):
        ActivationDataModule(str(feat), test_path=str(other))


# -- bad input -----------------------------------------------------------------------------------------
def test_one_class_selection_is_an_error(feat):
    with pytest.raises(ProbingError, match="--data.classes .* at least two classes"):
        ActivationDataModule(str(feat), classes=["normal"])
    with pytest.raises(ProbingError, match="--data.classes .* at least two classes"):
        ActivationDataModule(str(feat), class_map={"malicious": "normal", "jailbreak": "normal"})
    with pytest.raises(ProbingError, match="--data.classes has 'benign'"):
        ActivationDataModule(str(feat), classes=["normal", "benign"])


def test_class_absent_from_training_file_is_an_error(tmp_path):
    path = make_feature_file(tmp_path / "f.h5", n=20, num_layers=2, hidden_size=4, label_names=LABELS3,
                             labels=np.arange(20) % 2)  # fmt: skip
    with pytest.raises(ProbingError, match="no rows of it"):
        ActivationDataModule(str(path), classes=LABELS3)
    assert ActivationDataModule(str(path)).class_names == ["normal", "malicious"]


def test_layer_and_position_out_of_range(feat):
    with pytest.raises(ProbingError, match="--data.layers: layer 6 is out of range.*0..5"):
        ActivationDataModule(str(feat), layers=[6])
    with pytest.raises(ProbingError, match="--data.position=1 is out of range"):
        ActivationDataModule(str(feat), position=1)


def test_nan_activations_are_an_error(tmp_path):
    hidden = np.random.default_rng(0).standard_normal((40, 3, 4)).astype(np.float32)
    hidden[7, 2, 1] = np.nan
    path = make_feature_file(tmp_path / "nan.h5", hidden=hidden, labels=np.arange(40) % 2)
    for mode in ("always", "never"):
        dm = ActivationDataModule(str(path), in_memory=mode)
        with pytest.raises(
            ProbingError,
            match=r"rows 7 hold non-finite \(NaN/inf\) activations at layer 2; .*--data",
        ):
            dm.setup()
    ActivationDataModule(str(path), layers=[0, 1]).setup()  # the clean layers are usable


def test_bad_files(tmp_path):
    with pytest.raises(ProbingError, match="does not exist"):
        ActivationDataModule(str(tmp_path / "missing.h5"))
    (tmp_path / "corrupt.h5").write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(ProbingError, match="not a readable HDF5"):
        ActivationDataModule(str(tmp_path / "corrupt.h5"))
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ProbingError, match="not a probing feature file"):
        ActivationDataModule(str(tmp_path / "foreign.h5"))
    make_feature_file(tmp_path / "part.h5", n=40, complete=False)
    with pytest.raises(ProbingError, match="incomplete"):
        ActivationDataModule(str(tmp_path / "part.h5"))


def test_bad_split(feat):
    with pytest.raises(ProbingError, match="--data.split"):
        ActivationDataModule(str(feat), split=(0.5, 0.2, 0.2))


def test_data_options_are_the_data_modules_arguments():
    """``DataOptions`` (read by `probing weak` and the short `fit --help` without Lightning) has the
    data module's arguments: names, types, defaults and help."""
    import dataclasses
    import inspect

    from probing.data.options import DataOptions, args_doc

    params = list(inspect.signature(ActivationDataModule.__init__).parameters.values())[1:]
    fields = dataclasses.fields(DataOptions)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        assert str(p.annotation) == str(f.type), p.name
        default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert p.default == default, p.name
    assert args_doc() in (ActivationDataModule.__doc__ or "")
