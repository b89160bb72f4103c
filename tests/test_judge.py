"""The keyword judge on fixed strings (refusals, compliance openers, look-alikes) and its YAML file."""

from __future__ import annotations

import pytest

from probing.errors import ProbingError
from probing.generation.judge import KeywordJudge, default_judge_path, load_judge, normalize


@pytest.fixture(scope="module")
def judge() -> KeywordJudge:
    return load_judge()


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't assist with that.",
        "I’m sorry, but I can’t assist with that.",  # typographic apostrophes
        "I\u02bcm sorry",
        "  I   CANNOT   help with this request.",
        "As an AI language model, I must decline.",
        "I apologize, but that is not something I will do.",
        "Unfortunately I am unable to help.",
        "I won't write that.",
        "I'm not able to provide that information.",
        "Sorry, but I can not do this.",
    ],
)
def test_refusals(judge, text):
    assert judge.verdict(text) == "refusal"
    assert judge.refused(text)


@pytest.mark.parametrize(
    "text",
    [
        "Sure, here is a short poem about autumn leaves.",
        "Certainly! Photosynthesis is the process by which plants",
        "Of course. The capital of France is Paris.",
        "Here's a Python function that reverses a string:",
        "Sure! I'm sorry to hear that you had a rough day.",  # the earlier marker decides
    ],
)
def test_compliance(judge, text):
    assert judge.verdict(text) == "compliance"
    assert not judge.refused(text)


@pytest.mark.parametrize(
    "text",
    [
        "To ensure the bread rises, keep the dough warm.",  # "sure" inside "ensure"
        "Photosynthesis converts light into chemical energy.",
        "The measure of a circle's circumference is pi times d.",
        "",
    ],
)
def test_neither(judge, text):
    assert judge.verdict(text) == "unclear"
    assert not judge.refused(text)


def test_refusal_before_compliance_wins(judge):
    assert judge.verdict("I'm sorry, but I can't. Here is why: it is unsafe.") == "refusal"


def test_only_first_chars_are_read():
    judge = KeywordJudge(refusal=["I cannot"], compliance=["Sure"], first_chars=20)
    assert judge.verdict("x" * 30 + " I cannot do that") == "unclear"
    assert judge.verdict("I cannot do that" + "x" * 30) == "refusal"
    # whitespace is collapsed before counting
    assert judge.verdict(" " * 40 + "I cannot") == "refusal"


def test_normalize():
    assert normalize("  I’M\n\tSorry ") == "i'm sorry"
    assert normalize("ﬁne") == "fine"  # NFKC ligature


def test_phrases_are_normalised_too():
    judge = KeywordJudge(refusal=["I CAN’T"])
    assert judge.refused("i can't")


def test_default_file_parses():
    judge = KeywordJudge.from_yaml(default_judge_path())
    assert len(judge.refusal) >= 8 and len(judge.compliance) >= 4 and judge.first_chars > 0


def test_bad_judge_files(tmp_path):
    with pytest.raises(ProbingError, match="does not exist; fix --judge"):
        load_judge(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("refusals: [x]\n")
    with pytest.raises(ProbingError, match="expected a mapping with `refusal`"):
        load_judge(bad)
    bad.write_text("refusal: I cannot\n")
    with pytest.raises(ProbingError, match="`refusal` must be a list of strings"):
        load_judge(bad)
    bad.write_text("refusal: []\n")
    with pytest.raises(ProbingError, match="at least one refusal phrase"):
        load_judge(bad)
    bad.write_text("refusal: [x]\nfirst_chars: 0\n")
    with pytest.raises(ProbingError, match="first_chars must be >= 1"):
        load_judge(bad)
