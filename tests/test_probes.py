"""Probe heads, vectorised metrics and probe modules against references (sklearn, torchmetrics)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
)

from probing.data import ActivationDataModule
from probing.probes import LinearHeads, LinearMLPProbe, LinearProbe, MLPHeads, MLPProbe
from probing.probes.metrics import LayerMetrics, bootstrap_accuracy, layer_metrics


def fit_probe(path, cls=LinearProbe, epochs=30, seed=0, dm_kwargs=None, **model_kwargs):
    """Train a probe with a bare Trainer (no logger) and test it; returns (trainer, model, dm)."""
    L.seed_everything(seed, verbose=False)
    dm = ActivationDataModule(str(path), **(dm_kwargs or {}))
    model = cls(
        **dm.probe_args(), **model_kwargs,
    )  # fmt: skip
    trainer = L.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, deterministic=True, default_root_dir=str(path.parent / "run"),
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    trainer.fit_metrics = dict(trainer.callback_metrics)
    trainer.test(model, datamodule=dm, verbose=False)
    return trainer, model, dm


# -- heads ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", [LinearHeads(4, 8, 3), MLPHeads(4, 8, 3, hidden=5)])
def test_heads_are_independent_per_layer(head):
    x = torch.randn(6, 4, 8)
    out = head(x)
    assert out.shape == (6, 4, 3)
    out[:, 2].pow(2).sum().backward()
    for name, p in head.named_parameters():
        grad = p.grad
        assert grad[2].abs().sum() > 0, name
        others = torch.cat([grad[:2].flatten(), grad[3:].flatten()])
        assert torch.all(others == 0), f"{name} leaks gradient from layer 2 into other layers"


def test_linear_heads_equal_per_layer_linear():
    """Values and gradients equal those of one ``x @ W + b`` per layer (the heads compute the
    transposed product, which is faster with few outputs)."""
    head = LinearHeads(3, 5, 2)
    x = torch.randn(7, 3, 5)
    weight = head.weight.detach().clone().requires_grad_()
    bias = head.bias.detach().clone().requires_grad_()
    expected = torch.stack([x[:, i] @ weight[i] + bias[i] for i in range(3)], 1)
    out = head(x)
    torch.testing.assert_close(out, expected)
    target = torch.randn_like(out)
    ((out - target) ** 2).sum().backward()
    ((expected - target) ** 2).sum().backward()
    torch.testing.assert_close(head.weight.grad, weight.grad)
    torch.testing.assert_close(head.bias.grad, bias.grad)


def test_heads_reject_wrong_shape():
    with pytest.raises(ValueError, match=r"\[batch, 4 layers, 8\]"):
        LinearHeads(4, 8, 2)(torch.randn(2, 3, 8))


# -- metrics ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_classes", [2, 3])
def test_vectorised_metrics_equal_per_layer_torchmetrics(num_classes):
    gen = torch.Generator().manual_seed(0)
    n, layers = 257, 6
    target = torch.randint(0, num_classes, (n,), generator=gen)
    logits = (
        torch.randn(n, layers, num_classes, generator=gen)
        + 1.5
        * torch.nn.functional.one_hot(target, num_classes)[:, None]
        * torch.linspace(0, 2, layers)[None, :, None]
    )
    probs = logits.softmax(-1).round(decimals=2)  # rounding creates ties
    got = layer_metrics(probs, target)
    for j in range(layers):
        p = probs[:, j]
        if num_classes == 2:
            ref = {
                "accuracy": BinaryAccuracy()(p[:, 1], target),
                "f1": BinaryF1Score()(p[:, 1], target),
                "auroc": BinaryAUROC()(p[:, 1], target),
            }
        else:
            ref = {
                "accuracy": MulticlassAccuracy(num_classes, average="micro")(p, target),
                "f1": MulticlassF1Score(num_classes, average="macro")(p, target),
                "auroc": MulticlassAUROC(num_classes, average="macro")(p, target),
            }
        for k, v in ref.items():
            assert got[k][j].item() == pytest.approx(v.item(), abs=1e-6), (k, j)


def test_layer_metric_accumulates_batches_and_undefined_auroc_is_nan():
    gen = torch.Generator().manual_seed(1)
    scores, target = torch.randn(50, 3, 2, generator=gen), torch.randint(0, 2, (50,), generator=gen)
    metric = LayerMetrics(3, 2)
    for start in range(0, 50, 16):
        metric.update(scores[start : start + 16], target[start : start + 16])
    for k, v in metric.compute().items():
        torch.testing.assert_close(v, layer_metrics(scores, target)[k])
    one_class = layer_metrics(scores, torch.ones(50, dtype=torch.long))
    assert torch.isnan(one_class["auroc"]).all()


def test_bootstrap_interval_brackets_accuracy():
    correct = torch.rand(400, 4) < torch.tensor([0.5, 0.7, 0.9, 1.0])
    lo, hi = bootstrap_accuracy(correct, 200, seed=0)
    acc = correct.double().mean(0)
    assert torch.all(lo <= acc) and torch.all(acc <= hi)
    assert hi[3] == lo[3] == 1.0


# -- modules ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("probes") / "feat.h5"
    return make_feature_file(
        path, n=1000, num_layers=4, hidden_size=8, separability=[0.2, 0.6, 1.2, 3.0], seed=3
    )


def test_linear_probe_matches_sklearn_logistic_regression(synthetic):
    from sklearn.linear_model import LogisticRegression

    _, model, dm = fit_probe(
        synthetic, epochs=100, lr=5e-2, dm_kwargs={"batch_size": 1024, "split": [0.7, 0.0, 0.3]}
    )
    results = model_test_accuracy(model)
    train, test = dm.split_pos["train"], dm.split_pos["test"]
    x, y = dm.sources["main"].x.numpy(), dm.sources["main"].y
    for j in range(len(dm.layers)):
        clf = LogisticRegression(max_iter=2000).fit(x[train, j], y[train])
        ref = clf.score(x[test, j], y[test])
        assert results[j] == pytest.approx(ref, abs=0.02), (
            f"layer {j}: probe {results[j]} vs sklearn {ref}"
        )


@pytest.mark.parametrize("cls", [LinearProbe, LinearMLPProbe])
def test_full_batch_linear_probe_equals_sklearn_logistic_regression(synthetic, cls):
    """``batch_size: full``: L-BFGS on mean CE + l2/2 |W|^2 is LogisticRegression(C=2/(l2 n))."""
    from sklearn.linear_model import LogisticRegression

    l2 = 0.01
    trainer, model, dm = fit_probe(
        synthetic, cls=cls, dm_kwargs={"batch_size": "full", "split": [0.7, 0.0, 0.3]}, l2=l2,
        tol=1e-7,
    )  # fmt: skip
    assert model.full_batch and trainer.current_epoch == 1  # one epoch, whatever max_epochs
    assert trainer.max_epochs == 1  # as the progress bar shows it ("Epoch 0/0")
    train, test = dm.split_pos["train"], dm.split_pos["test"]
    x, y = dm.sources["main"].x, dm.sources["main"].y
    with torch.no_grad():
        probs = model(x[test])["linear"].softmax(-1)[..., 1].numpy()
    accuracy = model_test_accuracy(model)
    for j in range(len(dm.layers)):
        ref = LogisticRegression(C=2 / (l2 * len(train)), tol=1e-10, max_iter=10000)
        ref.fit(x[train, j].numpy(), y[train])
        expected = ref.predict_proba(x[test, j].numpy())[:, 1]
        assert abs(probs[:, j] - expected).max() < 2e-3, f"layer {j}"
        assert accuracy[j] == pytest.approx(ref.score(x[test, j].numpy(), y[test]), abs=1e-9)


def test_full_batch_mlp_stops_early_and_checkpoints_load(synthetic, tmp_path):
    from probing.monitor.probe import load_probe
    from probing.probes.checkpoint import load_probe_checkpoint

    L.seed_everything(0, verbose=False)
    dm = ActivationDataModule(str(synthetic), batch_size="full")
    model = LinearMLPProbe(
        **dm.probe_args(), lr=1e-2, max_full_epochs=2000,
    )  # fmt: skip
    trainer = L.Trainer(
        max_epochs=40, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert trainer.current_epoch == 1 and 1 < trainer.global_step < 2000  # early stopped
    acc = model.val_results["mlp"]["accuracy"]
    assert acc[3] > 0.9 and acc == sorted(acc)  # separability rises with the layer
    (ckpt,) = (tmp_path / "checkpoints").glob("*.ckpt")
    x = dm.sources["main"].x[:5]
    with torch.no_grad():
        expected = {k: v.softmax(-1) for k, v in model(x).items()}
    loaded = load_probe_checkpoint(ckpt)
    with torch.no_grad():
        got = loaded(x)
    for name in ("linear", "mlp"):
        torch.testing.assert_close(got[name].softmax(-1), expected[name])
    assert load_probe(ckpt) is not None


def test_full_batch_falls_back_to_mini_batches_out_of_memory(synthetic):
    dm = ActivationDataModule(str(synthetic), batch_size="full", in_memory="never")
    assert not LinearProbe(**dm.probe_args()).full_batch_requested  # the probe is told at once
    dm.setup()
    assert not dm.full_batch
    assert dm.train_dataloader().batch_size >= 1


def model_test_accuracy(model):
    """Test accuracy per layer from the JSON report written at test time."""
    import json

    from probing.probes.wandb_utils import run_dir

    data = json.loads((run_dir(model.trainer) / "per_layer_metrics.json").read_text())
    rows = [r for r in data["rows"] if r["split"] == "test" and r["probe"] == model.probe_names[0]]
    return [r["accuracy"] for r in sorted(rows, key=lambda r: r["layer"])]


def test_seeded_runs_are_reproducible(synthetic):
    _, m1, _ = fit_probe(synthetic, cls=MLPProbe, epochs=3, seed=5)
    _, m2, _ = fit_probe(synthetic, cls=MLPProbe, epochs=3, seed=5)
    for (n1, p1), (_, p2) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=False):
        assert torch.equal(p1, p2), n1
    assert model_test_accuracy(m1) == model_test_accuracy(m2)


def test_linear_mlp_probe_reports_both_and_best_layer_from_val(synthetic):
    trainer, model, _ = fit_probe(
        synthetic, cls=LinearMLPProbe, epochs=15, lr=2e-2, dm_kwargs={"layers": "1:4"}
    )
    assert model.probe_names == ["linear", "mlp"]
    best = model.best_layers()
    assert set(best) == {"linear", "mlp"} and best["linear"]["layer"] == 3
    csv = (synthetic.parent / "run" / "per_layer_metrics.csv").read_text()
    lines = csv.strip().splitlines()
    assert lines[0] == "layer,probe,split,accuracy,f1,auroc"
    # (val + test) x 2 probes x 3 layers, and the text baseline on val and test (no layer)
    assert len(lines) == 1 + 2 * 2 * 3 + 2
    assert {ln.split(",")[0] for ln in lines[1:]} == {"1", "2", "3", ""}
    assert {ln for ln in lines if ln.startswith(",text,")} and len(
        [ln for ln in lines if ",text," in ln]
    ) == 2
    above = (synthetic.parent / "run" / "above_words.csv").read_text().splitlines()
    assert above[0] == "train,test,layer,probe,metric,delta,low,high"
    assert {ln.split(",")[3] for ln in above[1:]} == {"linear", "mlp"}
    per_source = (synthetic.parent / "run" / "per_source_metrics.csv").read_text()
    assert ",text,," in per_source  # the text baseline's per-source rows, layer empty
    assert (synthetic.parent / "run" / "accuracy_per_layer.png").stat().st_size > 1000
    assert "test/mlp/auroc/layer_01" in trainer.callback_metrics
    assert "val/linear/acc/layer_03" in trainer.fit_metrics
    assert float(trainer.fit_metrics["val/linear/best_layer"]) == 3.0


def test_multiclass_probe_runs(tmp_path):
    path = make_feature_file(tmp_path / "three.h5", n=300, num_layers=3, hidden_size=6,
                             label_names=["normal", "malicious", "jailbreak"], separability=6.0)  # fmt: skip
    _, model, dm = fit_probe(path, epochs=30, lr=5e-2)
    assert dm.num_classes == 3 and model.heads["linear"].weight.shape == (3, 6, 3)
    assert min(model_test_accuracy(model)) > 0.8


def test_checkpoint_with_other_hidden_size_or_layers_is_refused():
    from probing.errors import ProbingError

    model = LinearProbe(num_layers=5, hidden_size=8, num_classes=2, layers=[1, 2])
    ckpt = {"hyper_parameters": {**model.hparams, "hidden_size": 16}}
    with pytest.raises(ProbingError, match=r"hidden_size=16 .* gives 8.*--data.layers"):
        model.on_load_checkpoint(ckpt)
    ckpt = {"hyper_parameters": {**model.hparams, "layers": [1, 2, 3]}}
    with pytest.raises(ProbingError, match=r"layers=\[1, 2, 3\]"):
        model.on_load_checkpoint(ckpt)
    model.on_load_checkpoint({"hyper_parameters": dict(model.hparams), "probe_val_results": {}})
