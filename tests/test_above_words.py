"""The text baseline and "above the words": paired bootstrap differences, and `probing generalize` saying
where the states beat, match or lose to the prompt's words."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from featurefactory import make_feature_file
from sklearn.metrics import roc_auc_score, roc_curve

from probing.cli import main
from probing.probes.above_words import Paired, paired_deltas, tpr_columns, verdict
from probing.probes.rates import tpr_at_fpr
from probing.probes.text import fit_text, harm_score, text_probs

SOURCES = ["normal_a", "normal_b", "harm_a", "harm_b"]
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
]


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.2])
def test_tpr_columns_equal_the_roc_curve_with_ties(fpr):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 12, size=(300, 4)).astype(float)  # heavy ties
    positive = rng.random(300) < 0.4
    scores[positive] += 2
    got = tpr_columns(scores, positive, fpr)
    want = [tpr_at_fpr(scores[:, j], positive, fpr) for j in range(4)]
    np.testing.assert_allclose(got, want)
    # the whole ROC curve's answer: sklearn's default drop_intermediate loses collinear points
    for j in range(4):
        f, t, _ = roc_curve(positive, scores[:, j], drop_intermediate=False)
        assert got[j] == pytest.approx(t[f <= fpr + 1e-12].max())


def test_paired_deltas_identity_and_a_better_scorer():
    rng = np.random.default_rng(1)
    positive = np.arange(400) < 200
    text = rng.standard_normal(400) + positive * 0.5
    states = np.column_stack([text, rng.standard_normal(400) + positive * 3.0])
    p = Paired(states, text, positive, np.array([0.0, 1.5]), 0.0)
    d = paired_deltas(p, fpr=0.05, bootstrap=200, seed=0)
    for m in ("auroc", "tpr_at_1fpr", "accuracy"):
        delta, reps = d[m]
        assert delta[0] == 0 and np.all(reps[:, 0] == 0)  # the same scorer: exactly no difference
    delta, reps = d["auroc"]
    want = roc_auc_score(positive, states[:, 1]) - roc_auc_score(positive, text)
    assert delta[1] == pytest.approx(want)
    assert np.percentile(reps[:, 1], 2.5) > 0  # clearly better: the interval is above 0


def test_paired_deltas_one_class_set_uses_the_reference():
    rng = np.random.default_rng(2)
    ref_pos = np.arange(200) < 100
    ref_text = rng.standard_normal(200) + ref_pos
    ref_states = (rng.standard_normal(200) + ref_pos * 3)[:, None]
    held_text = rng.standard_normal(80) + 1
    held_states = (rng.standard_normal(80) + 3)[:, None]
    p = Paired(
        held_states, held_text, np.ones(80, bool), np.array([1.5]), 0.5,
        reference=(ref_states, ref_text, ref_pos),
    )  # fmt: skip
    d = paired_deltas(p, bootstrap=100)
    both_pos = np.concatenate([np.ones(80, bool), np.zeros(100, bool)])
    want = roc_auc_score(both_pos, np.concatenate([held_states[:, 0], ref_states[~ref_pos, 0]]))
    want -= roc_auc_score(both_pos, np.concatenate([held_text, ref_text[~ref_pos]]))
    assert d["auroc"][0][0] == pytest.approx(want)
    acc = (held_states[:, 0] >= 1.5).mean() - (held_text >= 0.5).mean()
    assert d["accuracy"][0][0] == pytest.approx(acc)  # the held-out rows' own catch rates


def test_text_baseline_reads_words_and_handles_an_absent_class():
    prompts = [f"please {w} the harmful thing" for w in WORDS] + [
        f"please {w} a nice thing" for w in WORDS
    ]
    y = np.array([1] * len(WORDS) + [0] * len(WORDS))
    clf = fit_text(prompts, y, val=(prompts, y))
    probs = text_probs(clf, ["do the harmful thing", "a nice thing please"], 3)
    assert probs.shape == (2, 3) and np.allclose(probs[:, 2], 0)
    assert harm_score(probs[:, :2])[0] > 0.5 > harm_score(probs[:, :2])[1]


def _file(path, states_know: bool, words_know: bool, n_per=100, layers=3, dim=12, seed=0):
    """Four sources. Layers 1..L-1 carry the label when ``states_know`` (layer 0 never does); the
    prompts carry it in their words when ``words_know`` (else the same random words for both)."""
    rng = np.random.default_rng(seed)
    src = np.repeat(np.arange(4), n_per)
    y = (src >= 2).astype(np.int64)
    x = rng.standard_normal((len(src), layers, dim)).astype(np.float32)
    if states_know:
        x[:, 1:, 0] += 4.0 * (2 * y[:, None] - 1)
    bag = [" ".join(rng.choice(WORDS, 5)) for _ in range(len(src))]
    prompts = [f"{b} {'attack weapon' if yi and words_know else 'garden recipe' if words_know else ''}"
               for b, yi in zip(bag, y, strict=True)]  # fmt: skip
    meta = {"sources": [{"path": s, "label": None} for s in SOURCES]}
    return make_feature_file(path, hidden=x, labels=y, sources=src, meta=meta, prompts=prompts)


def _above(out):
    return {
        (r["probe"], r["layer"], r["metric"]): r
        for r in _rows(out / "above_words.csv")
        if r["test"] == "cross-source (mean)"
    }


def test_generalize_states_beat_the_words_where_only_they_know(tmp_path):
    h5 = _file(tmp_path / "f.h5", states_know=True, words_know=False)
    out = tmp_path / "gen"
    assert main(["generalize", "--features", str(h5), "--output", str(out), "--probes",
                 "[linear, text]", "--bootstrap", "200"]) == 0  # fmt: skip
    rows = _rows(out / "generalization.csv")
    text = [r for r in rows if r["probe"] == "text"]
    assert text and all(r["layer"] == "" for r in text)  # the text baseline has no layer
    above = _above(out)
    assert verdict(_num(above[("linear", "1", "auroc")])) == "beat"
    assert verdict(_num(above[("linear", "2", "auroc")])) == "beat"
    assert verdict(_num(above[("linear", "0", "auroc")])) != "beat"  # noise vs noise
    md = (out / "generalization.md").read_text()
    assert "Above the words?" in md and "beat the words at layers 1–2" in md
    assert "text baseline" in md
    assert (out / "generalization.png").stat().st_size > 0


def test_generalize_states_lose_to_the_words_where_only_the_words_know(tmp_path):
    h5 = _file(tmp_path / "f.h5", states_know=False, words_know=True)
    out = tmp_path / "gen"
    assert main(["generalize", "--features", str(h5), "--output", str(out), "--probes",
                 "[linear, text]", "--bootstrap", "200", "--loso", "false", "--matrix",
                 "[{train: [normal_a, harm_a], test: [normal_b, harm_b]}]"]) == 0  # fmt: skip
    above = _above(out)
    assert all(verdict(_num(above[("linear", str(j), "auroc")])) == "lose" for j in range(3))
    md = (out / "generalization.md").read_text()
    assert "lose to them at 0–2" in md


def _num(row):
    return {k: float(row[k]) for k in ("delta", "low", "high")}


def test_generalize_bootstrap_must_not_be_negative(tmp_path, capsys):
    h5 = _file(tmp_path / "f.h5", states_know=True, words_know=False, n_per=20)
    code = main(["generalize", "--features", str(h5), "--output", str(tmp_path / "o"),
                 "--bootstrap", "-1"])  # fmt: skip
    assert code == 2
    assert "--bootstrap must be 0" in capsys.readouterr().err


def test_weighted_bootstrap_equals_recomputing_each_resample():
    """The fast path (one ranking, row weights) gives exactly the metrics of each resampled set."""
    from probing.probes.above_words import column_metrics, resample, stack_rows

    rng = np.random.default_rng(3)
    ref_pos = np.arange(150) < 70
    p = Paired(
        np.round(rng.standard_normal((60, 3)) + 1, 1), np.round(rng.standard_normal(60) + 0.5, 1),
        np.ones(60, bool), np.array([0.5, 1.0, 1.5]), 0.7,
        reference=(np.round(rng.standard_normal((150, 3)) + ref_pos[:, None], 1),
                   np.round(rng.standard_normal(150) + ref_pos, 1), ref_pos),
    )  # fmt: skip
    d = paired_deltas(p, fpr=0.05, bootstrap=20, seed=7)
    own, own_pos, ref, ref_pos2, thresholds = stack_rows(p)
    draw = np.random.default_rng(7)
    for b in range(20):
        i, j = resample(draw, len(own), len(ref))
        want = column_metrics(own[i], own_pos[i], ref[j], ref_pos2[j], thresholds, 0.05)
        for m in ("auroc", "tpr_at_1fpr", "accuracy"):
            np.testing.assert_allclose(d[m][1][b], want[m][:-1] - want[m][-1], atol=1e-12)


def test_demo_words_section_says_where_states_beat_the_words_across_languages(tmp_path):
    """English prompts carry the label in their words, translations carry none (other words), the
    states carry it everywhere: the section must say the states beat the words in each language."""
    from probing.demo_generalise import CLASS_MAP, run_generalise
    from probing.demo_words import run_crosslingual, section

    rng = np.random.default_rng(5)
    names = ["normal", "malicious", "contrast"] + [
        f"{s}-{lang}"
        for lang in ("en", "es", "zh", "ru")
        for s in ("normal", "malicious", "contrast")
    ]
    labels = ["normal", "malicious", "contrast"] + [
        f"en_{s}" if lang == "en" else f"{s}_translated"
        for lang in ("en", "es", "zh", "ru") for s in ("normal", "malicious", "contrast")
    ]  # fmt: skip
    label_names = list(dict.fromkeys(labels))
    src = np.repeat(np.arange(len(names)), 40)
    harmful = np.array(["malicious" in names[s] for s in src])
    y = np.array([label_names.index(labels[s]) for s in src])
    x = rng.standard_normal((len(src), 3, 8)).astype(np.float32)
    x[:, 1:, 0] += 4.0 * (2 * harmful[:, None] - 1)
    vocab = {"en": "attack weapon", "es": "ataque arma", "zh": "攻击 武器", "ru": "атака оружие"}
    prompts = []
    for s, h in zip(src, harmful, strict=True):
        lang = names[s].rsplit("-", 1)[1] if "-" in names[s] else "en"
        word = (
            (vocab[lang] if h else "garden recipe")
            if lang == "en"
            else f"{vocab[lang]} {rng.integers(9)}"
        )
        prompts.append(f"{' '.join(rng.choice(WORDS, 4))} {word}")
    meta = {"sources": [{"path": n, "name": n} for n in names]}
    h5 = make_feature_file(tmp_path / "d.h5", hidden=x, labels=y, sources=src,
                           label_names=label_names, meta=meta, prompts=prompts)  # fmt: skip
    cross = run_generalise(h5, tmp_path / "g", names)
    lingual = run_crosslingual(h5, tmp_path / "g" / "crosslingual", names, CLASS_MAP)
    text = section(cross, lingual, "g", "tiny")
    assert "## Does the model know more than the words?" in text
    assert "| layer | held-out sources (mean) | en | es | zh | ru |" in text
    for lang in ("es", "zh", "ru"):
        assert f"{lang}: beat at 1–2" in text, text
    rows = _rows(tmp_path / "g" / "crosslingual" / "above_words.csv")
    assert {r["test"] for r in rows} >= {"en", "es", "zh", "ru", "cross-source (mean)"}


def test_poe_probe_learns_what_the_words_do_not_explain(tmp_path):
    """Training sources: the words give the label away and one state dimension copies the words (a
    lexical feature, clean); another carries the concept (noisy). On a held-out source the words and
    the lexical feature are gone: the product-of-experts probe, fitted beside the text baseline, leans
    on the concept and transfers better than the plain linear probe."""
    rng = np.random.default_rng(11)
    n = 150
    src = np.repeat(np.arange(4), n)  # normal_a, harm_a (train), normal_b, harm_b (held out)
    y = (src % 2).astype(np.int64)
    sign = 2.0 * y - 1
    x = rng.standard_normal((len(src), 2, 6)).astype(np.float32)
    train = src < 2
    x[:, 1, 0] += 1.2 * sign  # the concept: everywhere, noisy
    x[train, 1, 1] += 3.0 * sign[train]  # the words' copy: only where the words give it away
    prompts = [
        f"{' '.join(rng.choice(WORDS, 4))} {('attack weapon' if h else 'garden recipe') if t else ''}"
        for h, t in zip(y, train, strict=True)
    ]
    names = ["normal_a", "harm_a", "normal_b", "harm_b"]
    meta = {"sources": [{"path": s, "label": None} for s in names]}
    h5 = make_feature_file(tmp_path / "p.h5", hidden=x, labels=y, sources=src, meta=meta,
                           prompts=prompts)  # fmt: skip
    out = tmp_path / "gen"
    matrix = "[{train: [normal_a, harm_a], test: [{name: b, sources: [normal_b, harm_b]}]}]"
    assert main(["generalize", "--features", str(h5), "--output", str(out), "--loso", "false",
                 "--matrix", matrix, "--probes", "[linear, poe, text]", "--bootstrap", "0"]) == 0  # fmt: skip
    rows = {(r["probe"], r["layer"]): float(r["auroc"]) for r in _rows(out / "generalization.csv")
            if r["test"] == "b"}  # fmt: skip
    assert rows[("poe", "1")] > rows[("linear", "1")] + 0.03, rows
