"""Prompt loaders: formats, default columns, limits, shuffles, built-in sets and bad input."""

from __future__ import annotations

import json

import pytest

from probing.errors import ProbingError
from probing.prompts import PromptSource, load_prompts, load_source
from probing.prompts.sources import apply_jailbreak, jailbreak_templates

ROWS = ["first prompt", "second, with a comma", 'third "quoted"', "fourth"]


def _csv(path, header, rows, sep=","):
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_default_column_is_first_known_name(tmp_path):
    p = _csv(tmp_path / "a.csv", ["id", "text", "goal"], [[i, "x", r] for i, r in enumerate(ROWS)])
    assert load_source(PromptSource(path=str(p))) == ROWS  # goal comes before text
    assert load_source(PromptSource(path=str(p), column="text")) == ["x"] * 4


def test_tsv_json_jsonl_txt_parquet(tmp_path):
    tsv = _csv(tmp_path / "a.tsv", ["instruction"], [[r] for r in ROWS], sep="\t")
    js = tmp_path / "a.json"
    js.write_text(json.dumps([{"prompt": r, "x": 1} for r in ROWS]))
    jsl = tmp_path / "a.jsonl"
    jsl.write_text("\n".join(json.dumps({"q": r}) for r in ROWS) + "\n")
    txt = tmp_path / "a.txt"
    txt.write_text("\n".join(ROWS) + "\n\n")
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    par = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ROWS}), par)
    assert load_source(PromptSource(path=str(tsv))) == ROWS
    assert load_source(PromptSource(path=str(js))) == ROWS
    assert load_source(PromptSource(path=str(jsl), field="q")) == ROWS
    assert load_source(PromptSource(path=str(txt))) == ROWS
    assert load_source(PromptSource(path=str(par))) == ROWS


def test_limit_and_seeded_shuffle(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("\n".join(f"p{i}" for i in range(50)))
    a = load_source(PromptSource(path=str(txt), shuffle=True, seed=3, limit=10))
    b = load_source(PromptSource(path=str(txt), shuffle=True, seed=3, limit=10))
    c = load_source(PromptSource(path=str(txt), shuffle=True, seed=4, limit=10))
    assert a == b and a != c and len(a) == 10
    assert load_source(PromptSource(path=str(txt), limit=3)) == ["p0", "p1", "p2"]


def test_labels_any_number_of_classes(tmp_path):
    for name in "abc":
        (tmp_path / f"{name}.txt").write_text(f"{name}1\n{name}2\n")
    sources = [PromptSource(path=str(tmp_path / f"{n}.txt")) for n in "abc"]
    sources.append(PromptSource(path=str(tmp_path / "a.txt"), label="c"))
    prompts, labels, src, names = load_prompts(sources)
    assert names == ["a", "b", "c"]
    assert labels == [0, 0, 1, 1, 2, 2, 2, 2]
    assert src == [0, 0, 1, 1, 2, 2, 3, 3]


def test_builtin_sets():
    normal = load_source(PromptSource(path="normal"))
    malicious = load_source(PromptSource(path="malicious"))
    jail = load_source(PromptSource(path="jailbreak"))
    assert len(normal) >= 300 and len(malicious) >= 300
    assert len(jail) == len(malicious)
    styles = {t["style"] for t in jailbreak_templates()}
    assert len(styles) >= 6
    # every jailbreak prompt carries its goal (plainly or encoded) and differs from it
    assert all(j != m for j, m in zip(jail, malicious))
    assert PromptSource(path="jailbreak").label_name == "jailbreak"


def test_jailbreak_encodings():
    goal = "Do the bad thing"
    assert apply_jailbreak(goal, "{goal_rot13}") == "Qb gur onq guvat"
    assert apply_jailbreak(goal, "{goal_reversed}") == "thing bad the Do"
    assert apply_jailbreak(goal, "{goal_base64}") == "RG8gdGhlIGJhZCB0aGluZw=="


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text(""), "is empty"),
        (lambda p: p.write_text("id,other\n1,x\n"), "none of the default columns"),
        (lambda p: p.write_text("prompt\nok\n\nfine\n"), None),
        (lambda p: p.write_text('prompt\nok\n""\n'), "row 3 has an empty prompt"),
        (lambda p: p.write_text("prompt\n"), "holds no prompts"),
    ],
)
def test_bad_csv(tmp_path, setup, match):
    p = tmp_path / "bad.csv"
    setup(p)
    if match is None:  # csv skips blank lines: not an error
        assert load_source(PromptSource(path=str(p))) == ["ok", "fine"]
        return
    with pytest.raises(ProbingError, match=match):
        load_source(PromptSource(path=str(p)))


def test_bad_column_and_options(tmp_path):
    p = _csv(tmp_path / "a.csv", ["prompt"], [["x"]])
    with pytest.raises(ProbingError, match="no column 'goal'.*set `column`"):
        load_source(PromptSource(path=str(p), column="goal"))
    with pytest.raises(ProbingError, match="limit must be >= 1"):
        load_source(PromptSource(path=str(p), limit=0))
    with pytest.raises(ProbingError, match="unsupported prompt file type"):
        (tmp_path / "a.xlsx").write_text("x")
        load_source(PromptSource(path=str(tmp_path / "a.xlsx")))
    with pytest.raises(ProbingError, match="no prompt sources"):
        load_prompts([])


def test_paper_data_loads(shared_data):
    mal = load_source(PromptSource(path=str(shared_data / "advbench_plus_malicious.csv")))
    normal = load_source(PromptSource(path=str(shared_data / "normal_prompts.csv")))
    assert len(mal) == 966 and len(normal) == 500


def test_where_keeps_rows_by_metadata_and_names_sources():
    from probing.prompts.sources import source_names

    questions = load_source(PromptSource(path="malicious", where={"form": "question"}))
    assert len(questions) >= 100 and all(q.rstrip().endswith("?") for q in questions)
    twins = load_source(PromptSource(path="contrast", where={"mirrors": ["drugs", "weapons"]}))
    everything = load_source(PromptSource(path="contrast"))
    assert 0 < len(twins) < len(everything) / 4  # two of the (at least eight) mirrored categories
    names = source_names(
        [
            PromptSource(path="malicious", where={"form": "question"}),
            PromptSource(path="malicious", jailbreak=True),
            PromptSource(path="malicious", jailbreak=True),
            {"path": "data/x.csv", "name": "mine"},
            "older-file-source",
        ]
    )
    assert names == [
        "malicious[form=question]",
        "malicious+jailbreak",
        "malicious+jailbreak#2",
        "mine",
        "older-file-source",
    ]
    with pytest.raises(ProbingError, match="no column 'nope'"):
        load_source(PromptSource(path="normal", where={"nope": "x"}))
    with pytest.raises(ProbingError, match="no row matches"):
        load_source(PromptSource(path="normal", where={"form": "sonnet"}))
