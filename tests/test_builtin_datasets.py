"""Content checks of the built-in prompt sets in datasets/ (no project imports)."""

from __future__ import annotations

import csv
import os
import re
import string
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT / "datasets"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

PLACEHOLDERS = ("goal", "goal_base64", "goal_rot13", "goal_reversed")
REQUIRED_STYLES = {
    "roleplay",
    "refusal_suppression",
    "prefix_injection",
    "hypothetical",
    "nested_scene",
    "obfuscation",
}


def _rows(name: str) -> list[dict[str, str]]:
    with open(DATASETS / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _norm(text: str) -> str:
    """Lower case, whitespace collapsed."""
    return " ".join(text.lower().split())


def _norm_loose(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def normal() -> list[dict[str, str]]:
    return _rows("normal.csv")


@pytest.fixture(scope="module")
def malicious() -> list[dict[str, str]]:
    return _rows("malicious.csv")


@pytest.fixture(scope="module")
def templates() -> list[dict[str, str]]:
    items = yaml.safe_load((DATASETS / "jailbreak_templates.yaml").read_text(encoding="utf-8"))
    assert isinstance(items, list)
    return items


HEADERS = {
    "normal.csv": ["prompt", "task", "form", "lang", "crosslingual"],
    "malicious.csv": ["prompt", "category", "form", "lang", "crosslingual"],
    "contrast.csv": ["prompt", "mirrors", "kind", "form", "lang", "crosslingual"],
    "heldout_harmful.csv": ["prompt", "category", "form", "lang"],
    "heldout_benign.csv": ["prompt", "mirrors", "form", "lang"],
    "normal_translated.csv": ["prompt", "lang", "task", "form", "en_row"],
    "malicious_translated.csv": ["prompt", "lang", "category", "form", "en_row"],
    "contrast_translated.csv": ["prompt", "lang", "mirrors", "kind", "form", "en_row"],
}
ALL = list(HEADERS)
TRANSLATED = {"normal_translated.csv": "normal.csv", "malicious_translated.csv": "malicious.csv",
              "contrast_translated.csv": "contrast.csv"}  # fmt: skip
LANGS = {"es": "[a-záéíóúñü]", "zh": "[\u4e00-\u9fff]", "ru": "[\u0400-\u04ff]"}
TRAINING = ["normal.csv", "malicious.csv", "contrast.csv"]
FORMS = {"imperative", "question", "first_person", "terse", "polite", "indirect"}


@pytest.fixture(scope="module")
def contrast() -> list[dict[str, str]]:
    return _rows("contrast.csv")


def test_headers():
    for name, header in HEADERS.items():
        with open(DATASETS / name, newline="", encoding="utf-8") as f:
            assert next(csv.reader(f)) == header, name


def test_counts(normal, malicious, contrast):
    assert len(normal) >= 600
    assert len(malicious) >= 600
    assert len(contrast) >= 400
    assert len(_rows("heldout_harmful.csv")) >= 200
    assert len(_rows("heldout_benign.csv")) >= 200


@pytest.mark.parametrize("name", TRAINING)
def test_forms_balanced(name):
    """Form carries no label: every form is 15-25% of every training set."""
    counts = Counter(r["form"] for r in _rows(name))
    assert set(counts) == FORMS, counts
    total = sum(counts.values())
    assert all(0.15 <= n / total <= 0.25 for n in counts.values()), counts


def test_terse_and_question_forms_look_like_it():
    for name in TRAINING + list(TRANSLATED):
        for row in _rows(name):
            if row["form"] == "terse":
                assert row["prompt"] == row["prompt"].lower(), (name, row["prompt"])
                assert not row["prompt"].endswith((".", "?", "!", "。", "？", "！")), (
                    name,
                    row["prompt"],
                )
            if row["form"] in ("question", "indirect"):
                assert row["prompt"].rstrip().endswith(("?", "？")), (name, row["prompt"])


def test_english_sets_say_their_language_and_which_rows_were_translated():
    for name in ("normal.csv", "malicious.csv", "contrast.csv", "heldout_harmful.csv",
                 "heldout_benign.csv"):  # fmt: skip
        assert {r["lang"] for r in _rows(name)} == {"en"}, name
    for translated, english in TRANSLATED.items():
        rows, en = _rows(translated), _rows(english)
        marked = {i for i, r in enumerate(en) if r["crosslingual"] == "translated"}
        assert {r["crosslingual"] for r in en} == {"translated", "untranslated"}, english
        assert {int(r["en_row"]) for r in rows} == marked, translated


@pytest.mark.parametrize("translated", list(TRANSLATED))
def test_translations_keep_their_row_and_are_in_their_language(translated):
    """Every translation names its English row, keeps its metadata and is written in its language."""
    en = _rows(TRANSLATED[translated])
    rows = _rows(translated)
    per = Counter(r["lang"] for r in rows)
    assert set(per) == set(LANGS) and len(set(per.values())) == 1, per
    for r in rows:
        source = en[int(r["en_row"])]
        for key in r:
            if key not in ("prompt", "lang", "en_row"):
                assert r[key] == source[key], (translated, r["en_row"], key)
        assert r["prompt"] != source["prompt"], r
        assert re.search(LANGS[r["lang"]], r["prompt"].lower()), (r["lang"], r["prompt"])


def test_translations_hold_150_rows_per_class_and_language_balanced_over_forms():
    harmful = Counter(r["lang"] for r in _rows("malicious_translated.csv"))
    safe = Counter(r["lang"] for n in ("normal_translated.csv", "contrast_translated.csv")
                   for r in _rows(n))  # fmt: skip
    assert min(harmful.values()) >= 150 and min(safe.values()) >= 150, (harmful, safe)
    for name in TRANSLATED:
        for lang in LANGS:
            forms = Counter(r["form"] for r in _rows(name) if r["lang"] == lang)
            total = sum(forms.values())
            assert set(forms) == FORMS and all(0.12 <= n / total <= 0.22 for n in forms.values())
    categories = Counter(
        r["category"] for r in _rows("malicious_translated.csv") if r["lang"] == "zh"
    )
    assert len(categories) == len({r["category"] for r in _rows("malicious.csv")}), categories


def _opening(prompt: str) -> str:
    """The first two words, lower case, without punctuation ("hypothetically how")."""
    return " ".join(re.sub(r"[^\w\s']", " ", prompt.lower()).split()[:2])


@pytest.mark.parametrize("name", TRAINING)
def test_indirect_openings_varied(name):
    """`indirect` questions (about a third party or a hypothetical person) use many openings, none
    for more than 8 % of a set's indirect rows, so the opening itself carries no label."""
    openings = Counter(_opening(r["prompt"]) for r in _rows(name) if r["form"] == "indirect")
    total = sum(openings.values())
    assert total >= 100, (name, total)
    assert len(openings) >= 15, (name, openings)
    assert max(openings.values()) / total <= 0.08, (name, openings.most_common(3))


def test_contrast_mirrors_every_malicious_category(malicious, contrast):
    categories = set(r["category"] for r in malicious)
    mirrors = Counter(r["mirrors"] for r in contrast)
    assert set(mirrors) == categories, mirrors
    assert min(mirrors.values()) >= 20, mirrors


def test_heldout_sets_have_both_forms():
    for name in ("heldout_harmful.csv", "heldout_benign.csv"):
        counts = Counter(r["form"] for r in _rows(name))
        assert set(counts) == {"imperative", "question"}, (name, counts)
        assert min(counts.values()) >= 100, (name, counts)


def test_malicious_categories(malicious):
    counts = Counter(r["category"] for r in malicious)
    big = {c: n for c, n in counts.items() if n >= 20}
    assert len(big) >= 10, counts
    assert all(c and re.fullmatch(r"[a-z_]+", c) for c in counts), counts


def test_normal_tasks(normal):
    counts = Counter(r["task"] for r in normal)
    assert len(counts) >= 10, counts
    assert all(c and re.fullmatch(r"[a-z_]+", c) for c in counts), counts


@pytest.mark.parametrize("name", ALL)
def test_prompts_single_nonempty_lines(name):
    for i, row in enumerate(_rows(name), start=2):
        prompt = row["prompt"]
        assert prompt and prompt.strip(), f"{name} row {i} is empty"
        assert prompt == prompt.strip(), f"{name} row {i} has surrounding whitespace"
        assert "\n" not in prompt and "\r" not in prompt, f"{name} row {i} spans lines"
        assert None not in row, f"{name} row {i} has extra columns"


@pytest.mark.parametrize("name", ALL)
def test_no_duplicates(name):
    counts = Counter(_norm(r["prompt"]) for r in _rows(name))
    dupes = [p for p, n in counts.items() if n > 1]
    assert not dupes, dupes


def test_no_prompt_in_two_sets():
    seen: dict[str, str] = {}
    for name in ALL:
        for r in _rows(name):
            key = _norm(r["prompt"])
            assert key not in seen, (r["prompt"], seen.get(key), name)
            seen[key] = name


def test_jailbreak_styles(templates):
    styles = Counter(t["style"] for t in templates)
    assert len(styles) >= 6, styles
    assert set(styles) >= REQUIRED_STYLES, styles
    names = [t["name"] for t in templates]
    assert len(names) == len(set(names)), names


def test_jailbreak_templates_placeholders(templates):
    fmt = string.Formatter()
    values = {key: f"<<{key.upper()}>>" for key in PLACEHOLDERS}
    for t in templates:
        assert set(t) == {"style", "name", "template"}, t
        text = t["template"]
        assert isinstance(text, str) and text.strip(), t["name"]
        assert len(text) <= 800, t["name"]
        fields = [f for _, f, _, _ in fmt.parse(text) if f is not None]
        assert len(fields) == 1 and fields[0] in PLACEHOLDERS, (t["name"], fields)
        if t["style"] == "obfuscation":
            assert fields[0] != "goal", t["name"]
        out = text.format(**values)
        assert "{" not in out and "}" not in out, t["name"]
        assert out.count(values[fields[0]]) == 1, t["name"]


def _paper_lines() -> set[str]:
    out = set()
    for path in sorted(SHARED_DATA.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                out.update(_norm_loose(cell) for cell in row if cell.strip())
    return out


def test_no_line_copied_from_paper_data():
    if not SHARED_DATA.is_dir() or not any(SHARED_DATA.glob("*.csv")):
        reason = f"paper data not found at {SHARED_DATA}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (required when CI=true)")
        pytest.skip(reason)
    paper = _paper_lines()
    assert paper
    ours = [r["prompt"] for name in ALL for r in _rows(name)]
    copied = [p for p in ours if _norm_loose(p) in paper]
    assert not copied, copied
