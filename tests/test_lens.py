"""Logit-lens analysis: emotion lists, hand-computed counts and rates, files, CLI, bad input."""

from __future__ import annotations

import csv
import re
import warnings

import h5py
import numpy as np
import pytest
import yaml
from tiny import save_tiny, tiny_lm, tiny_tokenizer

from probing.cli import run_command
from probing.errors import ProbingError
from probing.features.extract import ExtractConfig, extract
from probing.features.store import RowTable
from probing.features.writer import FeatureWriter
from probing.lens.analysis import analyse, analyse_arrays, decode_tokens, label, softmax
from probing.lens.config import parse
from probing.lens.emotions import (
    EmotionLists,
    default_emotions_path,
    load_emotions,
    normalise,
)
from probing.lens.plots import heatmap_figure, plot_all
from probing.lens.report import CONSISTENCY_COLUMNS, TOP_TOKEN_COLUMNS, write_csvs
from probing.lens.run import lens
from probing.plotting import ESCAPED_NOTE
from probing.prompts import PromptSource

# -- emotion lists ---------------------------------------------------------------------------------


def test_normalise_strips_markers_punctuation_and_case():
    assert normalise("ĠSorry") == "sorry"
    assert normalise("▁Sure!") == "sure"
    assert normalise("Ġ“Cannot,”") == "cannot"
    assert normalise("Can’t") == "can't"  # typographic apostrophe, inner punctuation kept
    assert normalise("ĊĠ...") == ""
    assert normalise("Ġ") == ""


def test_every_default_entry_can_match_and_is_one_word():
    raw = yaml.safe_load(default_emotions_path().read_text())
    assert set(raw) == {"negative", "positive"}
    lists = load_emotions()
    for emotion in ("negative", "positive"):
        assert len(raw[emotion]) >= 10
        for entry in raw[emotion]:
            assert isinstance(entry, str), f"{entry!r} is not a string (quote it in the YAML)"
            assert len(entry.split()) == 1, f"{entry!r}: tokens are single pieces, one word only"
            for token in ("Ġ" + entry.capitalize(), "▁" + entry, entry.upper() + ",", " " + entry):
                assert normalise(token) == entry.casefold(), token
                assert lists.classify(token) == emotion, token
    assert {"sorry", "cannot", "can't", "unable"} <= set(lists.words("negative"))
    assert {"sure", "certainly", "glad", "here"} <= set(lists.words("positive"))
    assert lists.classify("Ġthe") == "neutral"


# -- a hand-built example ---------------------------------------------------------------------------

VOCAB = ["<pad>", "ĠSorry", "Ġcannot", "ĠSure", "Ġglad", "Ġthe", "Ġa", "Ġof", "Ġand", "Ġto", "ĠI"]
ID = {tok.lstrip("Ġ"): i for i, tok in enumerate(VOCAB)}


class StubTokenizer:
    """Only ``convert_ids_to_tokens`` and ``len``: what the analysis needs."""

    def convert_ids_to_tokens(self, ids):
        return [VOCAB[i] if 0 <= i < len(VOCAB) else None for i in ids]

    def __len__(self):
        return len(VOCAB)


def ids_of(*rows: str) -> list[list[int]]:
    return [[ID[w] for w in row.split()] for row in rows]


# layer 0: every prompt has {the, a, of} in some order; layer 1 differs by class (K = 3)
MALICIOUS = [ids_of("the a of", "of the a"), ids_of("Sorry cannot the", "Sorry I a")]
NORMAL = [
    ids_of("a of the", "the a of", "of a the", "the of a"),
    ids_of("Sure glad the", "Sure the a", "the Sure to", "the and to"),
]
LOGITS = np.array([2.0, 1.0, 0.0])


def example() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids/logits ``[6, 2, 3]``, labels (0 normal, 1 malicious), rows interleaved."""
    rows = [(0, [NORMAL[0][i], NORMAL[1][i]]) for i in range(4)]
    rows += [(1, [MALICIOUS[0][i], MALICIOUS[1][i]]) for i in range(2)]
    order = [0, 4, 1, 2, 5, 3]
    ids = np.array([rows[i][1] for i in order])
    labels = np.array([rows[i][0] for i in order])
    logits = np.broadcast_to(LOGITS, ids.shape).copy()
    return ids, logits, labels


def test_counts_rates_and_masses_on_a_known_example():
    ids, logits, labels = example()
    r = analyse_arrays(ids, logits, labels, ["normal", "malicious"], StubTokenizer(), top=4)
    p = np.exp(LOGITS) / np.exp(LOGITS).sum()
    mal, nor = r.classes["malicious"], r.classes["normal"]
    assert (mal.n, nor.n, r.num_layers, r.top_k) == (2, 4, 2, 3)
    assert (mal.dominant_emotion, nor.dominant_emotion) == ("negative", "positive")
    # malicious layer 1: Sorry in both, cannot/the/I/a once; ties ranked by token id
    assert [(t.token, t.count, t.emotion) for t in mal.top[1]] == [
        (" Sorry", 2, "negative"),
        (" cannot", 1, "negative"),
        (" the", 1, "neutral"),
        (" a", 1, "neutral"),
    ]
    assert [(t.token, t.count) for t in nor.top[1]] == [
        (" the", 4),
        (" Sure", 3),
        (" to", 2),
        (" glad", 1),
    ]
    m, n = mal.metrics, nor.metrics
    np.testing.assert_allclose(m["negative_rate"], [0, 1])
    np.testing.assert_allclose(m["positive_rate"], [0, 0])
    np.testing.assert_allclose(m["emotion_hit_rate"], [0, 1])
    np.testing.assert_allclose(m["negative_mass"], [0, ((p[0] + p[1]) + p[0]) / 2])
    np.testing.assert_allclose(n["positive_rate"], [0, 0.75])
    np.testing.assert_allclose(n["emotion_hit_rate"], [0, 0.75])
    np.testing.assert_allclose(n["positive_mass"], [0, ((p[0] + p[1]) + p[0] + p[1] + 0) / 4])
    np.testing.assert_allclose(n["negative_mass"], [0, 0])
    # consistency: layer 0 identical sets -> 1; layer 1 malicious (2+1+1)/6, normal (4+3+2)/12
    np.testing.assert_allclose(m["topk_consistency"], [1.0, 4 / 6])
    np.testing.assert_allclose(n["topk_consistency"], [1.0, 9 / 12])


def test_consistency_is_one_for_identical_topk_sets_and_low_for_disjoint():
    rng = np.random.default_rng(0)
    same = np.array([rng.permutation([5, 6, 7]) for _ in range(10)])[:, None]  # [10, 1, 3]
    disjoint = np.arange(1, 10).reshape(3, 1, 3)  # every prompt a different set
    for ids, expected in ((same, 1.0), (disjoint, 1 / 3)):
        labels = np.zeros(len(ids), dtype=int)
        r = analyse_arrays(ids, np.zeros(ids.shape), labels, ["c"], StubTokenizer())
        np.testing.assert_allclose(r.classes["c"].metrics["topk_consistency"], [expected])


def test_dominant_emotion_is_the_one_with_more_hits():
    ids = np.array(ids_of("Sorry Sure glad", "cannot the Sure"))[
        :, None
    ]  # 2 negative vs 3 positive
    r = analyse_arrays(ids, np.zeros(ids.shape), [0, 0], ["c"], StubTokenizer())
    c = r.classes["c"]
    assert c.dominant_emotion == "positive"
    np.testing.assert_allclose(c.metrics["emotion_hit_rate"], [1.0])
    np.testing.assert_allclose(c.metrics["negative_rate"], [1.0])
    np.testing.assert_allclose(softmax(np.zeros((1, 4))), [[0.25] * 4])


def test_decode_tokens_with_and_without_convert_tokens_to_string():
    assert decode_tokens(StubTokenizer(), [1, 5]) == [" Sorry", " the"]
    tok = tiny_tokenizer()
    ids = tok.convert_tokens_to_ids(["Ġ", "a", "Ċ"])
    assert decode_tokens(tok, ids) == [" ", "a", "\n"]


def test_labels_spell_out_invisible_tokens():
    assert [label(t) for t in (" Sure", " ", "\n\n", "\xa0", "\u200b", "")] == [
        "Sure",
        "␣",
        "\\n\\n",
        "U+00A0",
        "U+200B",
        "∅",
    ]
    assert label("abcdefghijklmnop", width=6) == "abcde…"


class CJKTokenizer(StubTokenizer):
    """The example's ``Ġof`` decodes to a CJK word (no glyphs in matplotlib's default font)."""

    def convert_ids_to_tokens(self, ids):
        return [
            "中文" if i == ID["of"] else t for i, t in zip(ids, super().convert_ids_to_tokens(ids))
        ]


def heatmap_texts(r, name="normal") -> tuple[list[str], list[str]]:
    fig = heatmap_figure(r, name)
    legend = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    return [t.get_text() for t in fig.axes[0].texts], legend


def test_heatmap_escapes_a_cjk_token_no_font_has_and_says_so(monkeypatch):
    monkeypatch.setattr("probing.plotting._fallback_family", lambda codepoint: None)
    ids, logits, labels = example()
    r = analyse_arrays(ids, logits, labels, ["normal", "malicious"], CJKTokenizer(), top=3)
    cells, legend = heatmap_texts(r)
    assert "\\u4e2d\\u6587" in cells and "中文" not in cells
    assert {"the", "a"} <= set(cells)  # tokens the font has are drawn as they are
    assert ESCAPED_NOTE in legend
    _, plain_legend = heatmap_texts(
        analyse_arrays(ids, logits, labels, ["n", "m"], StubTokenizer()), "n"
    )
    assert ESCAPED_NOTE not in plain_legend  # nothing escaped, nothing said


def test_heatmap_draws_a_cjk_token_without_boxes():
    """With the installed fonts: drawn with a font that has the glyphs, or escaped; never a box."""
    ids, logits, labels = example()
    r = analyse_arrays(ids, logits, labels, ["normal", "malicious"], CJKTokenizer(), top=3)
    fig = heatmap_figure(r, "normal")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r"Glyph \d+ .*missing from")
        fig.canvas.draw()
    cells = [t.get_text() for t in fig.axes[0].texts]
    legend = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert ("中文" in cells) != ("\\u4e2d\\u6587" in cells)
    assert (ESCAPED_NOTE in legend) == ("中文" not in cells)


def test_csvs_and_plots_have_the_documented_columns(tmp_path):
    ids, logits, labels = example()
    r = analyse_arrays(ids, logits, labels, ["normal", "malicious"], StubTokenizer(), top=3)
    write_csvs(r, tmp_path)
    paths = plot_all(r, tmp_path)
    with open(tmp_path / "lens_consistency.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CONSISTENCY_COLUMNS
    documented = "layer,class,n,dominant_emotion,emotion_hit_rate,negative_rate,positive_rate,"
    documented += "negative_mass,positive_mass,topk_consistency"
    assert ",".join(CONSISTENCY_COLUMNS) == documented
    assert len(rows) == 2 * 2
    last = {row["class"]: row for row in rows if row["layer"] == "1"}
    assert last["malicious"]["dominant_emotion"] == "negative"
    assert float(last["normal"]["topk_consistency"]) == pytest.approx(0.75)
    with open(tmp_path / "lens_top_tokens.csv", newline="") as f:
        tops = list(csv.DictReader(f))
    assert (
        tuple(tops[0])
        == TOP_TOKEN_COLUMNS
        == ("layer", "class", "rank", "token", "count", "emotion")
    )
    first = next(t for t in tops if t["layer"] == "1" and t["class"] == "malicious")
    assert (first["rank"], first["token"], first["count"], first["emotion"]) == (
        "1",
        " Sorry",
        "2",
        "negative",
    )
    names = {p.name for p in paths}
    assert names == {
        "consistency.png",
        "emotion_mass.png",
        "lens_heatmap_normal.png",
        "lens_heatmap_malicious.png",
    }
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


# -- feature files ----------------------------------------------------------------------------------


def write_lens_file(path, ids, logits, labels, label_names=("normal", "malicious"), **meta):
    n, num_layers, k = ids.shape
    rows = RowTable(
        prompt=[f"p{i}" for i in range(n)],
        rendered=[f"p{i}" for i in range(n)],
        label=np.asarray(labels),
        prompt_index=np.arange(n),
        source=np.zeros(n, dtype=int),
        n_tokens=np.full(n, 3),
    )
    meta = {
        "model": "stub",
        "model_source": "object",
        "label_names": list(label_names),
        "positions": "last",
        "config": {},
        **meta,
    }
    w = FeatureWriter.create(
        path, meta, rows, num_layers=num_layers, num_positions=1, hidden_size=4, top_k=k,
        storage_dtype="float32",
    )  # fmt: skip
    w.write(np.zeros((n, num_layers, 1, 4)), ids[:, :, None], logits[:, :, None])
    w.finish()
    return path


def test_analyse_reads_a_feature_file(tmp_path):
    ids, logits, labels = example()
    path = write_lens_file(tmp_path / "f.h5", ids, logits, labels)
    r = analyse(path, StubTokenizer(), classes=["malicious"])
    assert list(r.classes) == ["malicious"]
    np.testing.assert_allclose(r.classes["malicious"].metrics["topk_consistency"], [1.0, 4 / 6])
    assert r.meta["model"] == "stub"


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lens")
    lines = {
        "normal": ["hello there", "what is rain", "tell me a joke", "sing"],
        "malicious": ["do a bad thing", "break the rules now", "x y z"],
    }
    for name, text in lines.items():
        (tmp / f"{name}.txt").write_text("\n".join(text) + "\n")
    cfg = ExtractConfig(
        prompts=[PromptSource(path=str(tmp / f"{n}.txt")) for n in lines],
        output=str(tmp / "f.h5"),
        storage_dtype="float32",
        progress=False,
    )
    return extract(cfg, lm=tiny_lm("llama")), save_tiny(tmp / "model", "llama")


def test_cli_end_to_end_on_a_tiny_model(tiny_file, tmp_path):
    path, model = tiny_file
    out = tmp_path / "out"
    argv = [str(path), "--output", str(out), "--model.name", str(model), "--top", "4"]
    assert run_command("lens", [*argv, "--layers", "[0, -1]"]) == 0
    files = {p.name for p in out.iterdir()}
    assert files == {
        "lens_consistency.csv",
        "lens_top_tokens.csv",
        "consistency.png",
        "emotion_mass.png",
        "lens_heatmap_normal.png",
        "lens_heatmap_malicious.png",
        "lens_summary.md",
    }
    with open(out / "lens_consistency.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 2  # tiny llama: 3 decoder blocks + embeddings, 2 classes
    for row in rows:
        for key in ("emotion_hit_rate", "negative_rate", "positive_mass", "topk_consistency"):
            assert 0.0 <= float(row[key]) <= 1.0
    summary = (out / "lens_summary.md").read_text()
    assert "## Class `normal` (n = 4" in summary and "## Class `malicious` (n = 3" in summary
    lines = summary.splitlines()  # token tables at layers 0 and 3 (-1); consistency at every layer
    assert sum(x.startswith("| 3 | ") for x in lines) == 4
    assert sum(x.startswith("| 1 | ") for x in lines) == 2
    # a tokenizer object passed in (tests, notebooks) does the same without --tokenizer
    out2 = tmp_path / "out2"
    lens(parse([str(path), "--output", str(out2), "--top", "4"]), tiny_tokenizer())
    assert (out2 / "lens_top_tokens.csv").read_text() == (out / "lens_top_tokens.csv").read_text()


# -- bad input ---------------------------------------------------------------------------------------


def test_bad_class_layer_position_top(tiny_file, tmp_path):
    path, model = tiny_file
    base = [str(path), "--output", str(tmp_path / "o"), "--model.name", str(model)]
    with pytest.raises(
        ProbingError, match=r"--classes 'jailbreak' is not a class .*normal, malicious"
    ):
        run_command("lens", [*base, "--classes", "[jailbreak]"])
    with pytest.raises(ProbingError, match=r"--layers: layer 4 is out of range.*0\.\.3"):
        run_command("lens", [*base, "--layers", "[1, 4]"])
    with pytest.raises(ProbingError, match=r"--position=1 is out of range.*1 position"):
        run_command("lens", [*base, "--position", "1"])
    with pytest.raises(ProbingError, match=r"--position='inst' is not a position .*\['last'\]"):
        run_command("lens", [*base, "--position", "inst"])
    with pytest.raises(ProbingError, match="--top must be >= 1"):
        run_command("lens", [*base, "--top", "0"])


def test_in_memory_model_needs_a_tokenizer_and_wrong_tokenizer_is_caught(tiny_file, tmp_path):
    path, _ = tiny_file
    with pytest.raises(ProbingError, match="in-memory model 'tiny-llama'.*--model.name"):
        run_command("lens", [str(path), "--output", str(tmp_path)])
    with pytest.raises(ProbingError, match=r"lens token id \d+ but the tokenizer has only 11"):
        lens(parse([str(path), "--output", str(tmp_path)]), StubTokenizer())


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "negative: [sorry]\n",
            r"exactly the keys `negative` and `positive`.*found \['negative'\]",
        ),
        ("negative: [sorry]\npositive: [sure]\nneutral: [the]\n", "exactly the keys"),
        ("negative: [sorry]\npositive: [sure, of course]\n", "'of course' has several words"),
        ("negative: [sorry, no]\npositive: [sure]\n", "entry False is not a string; quote it"),
        ("negative: [sorry]\npositive: [Sorry!]\n", "also listed under `negative`"),
        ("negative: []\npositive: [sure]\n", "`negative` must be a non-empty list"),
        ("negative: [sorry]\npositive: ['...']\n", "empty after normalising"),
        ("- a list\n", "found list"),
        ("negative: [sorry\n", "not valid YAML"),
    ],
)
def test_bad_emotion_files(tmp_path, text, match):
    path = tmp_path / "e.yaml"
    path.write_text(text)
    with pytest.raises(ProbingError, match=match):
        load_emotions(path)


def test_missing_emotion_file_names_the_option(tmp_path):
    with pytest.raises(ProbingError, match="does not exist; fix --emotions"):
        load_emotions(tmp_path / "nope.yaml")
    assert EmotionLists(negative=["no"], positive=["yes"]).classify("ĠYes") == "positive"


@pytest.mark.parametrize("damage", ["top_k_zero", "no_datasets"])
def test_file_without_lens_data(tmp_path, damage):
    ids, logits, labels = example()
    path = write_lens_file(tmp_path / "f.h5", ids, logits, labels)
    with h5py.File(path, "r+") as f:
        if damage == "top_k_zero":
            f.attrs["lens_top_k"] = 0
        else:
            del f["lens_ids"], f["lens_logits"]
    with pytest.raises(ProbingError, match="holds no logit-lens data.*--lens_top_k"):
        analyse(path, StubTokenizer())


# -- the embedded model on the paper's data ------------------------------------------------------------


@pytest.mark.slow
def test_real_model_lens_decodes_real_words(shared_data, tmp_path):
    cfg = ExtractConfig(
        prompts=[
            PromptSource(path=str(shared_data / "normal_prompts.csv"), label="normal", limit=12),
            PromptSource(
                path=str(shared_data / "advbench_plus_malicious.csv"), label="malicious", limit=12
            ),
        ],
        output=str(tmp_path / "real.h5"),
        progress=False,
    )
    path = extract(cfg)
    out = tmp_path / "out"
    assert (
        run_command("lens", [str(path), "--output", str(out)]) == 0
    )  # tokenizer from the file's metadata
    with open(out / "lens_top_tokens.csv", newline="", encoding="utf-8") as f:
        tops = list(csv.DictReader(f))
    last = [t["token"] for t in tops if t["layer"] == "30" and int(t["rank"]) <= 5]
    assert len(last) == 10
    words = [t for t in last if re.fullmatch(r"[A-Za-z]{2,}", t.strip())]
    assert len(words) >= 5, last  # the final layer predicts English words such as "Sure"/"I"
    assert not any("Ġ" in t or "▁" in t for t in last), "space markers were not decoded"
    assert all(t["emotion"] in {"negative", "positive", "neutral"} for t in tops)
