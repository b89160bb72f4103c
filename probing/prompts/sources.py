"""Prompt sources: built-in sets and user files (CSV/TSV, JSON/JSONL, TXT, Parquet, HF datasets)."""

from __future__ import annotations

import base64
import codecs
import csv
import dataclasses
import io
import json
import logging
import os
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from probing.errors import ProbingError
from probing.resources import builtin_path

log = logging.getLogger(__name__)

DEFAULT_COLUMNS = ("prompt", "goal", "text", "instruction")
BUILTIN_SETS = (
    "normal",
    "malicious",
    "contrast",
    "jailbreak",
    "heldout_harmful",
    "heldout_benign",
    "normal_translated",
    "malicious_translated",
    "contrast_translated",
)
SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".txt", ".parquet")
_NEWLINE = re.compile(r"\r?\n")


def datasets_dir() -> Path:
    """The project's built-in prompt sets (``$PROBING_DATASETS`` overrides); package data in a wheel."""
    env = os.environ.get("PROBING_DATASETS")
    return Path(env) if env else builtin_path("datasets")


@dataclass
class PromptSource:
    """One labelled set of prompts.

    Args:
        path: a file (.csv .tsv .json .jsonl .txt .parquet), a built-in set (``normal``,
            ``malicious``, ``contrast``, ``jailbreak``, ``heldout_harmful``, ``heldout_benign``,
            ``normal_translated``, ``malicious_translated``, ``contrast_translated``) or
            ``hf:NAME`` for a Hugging Face dataset.
        label: class name of these prompts (default: the built-in name or the file's stem).
        name: name of this source in feature files and reports (default: the built-in name or the
            file's stem, ``+jailbreak`` when wrapped, ``#2``… when repeated); what
            ``--data.holdout_sources`` and ``probing generalize`` refer to.
        where: keep only rows whose metadata columns have these values, e.g. ``{form: question}`` or
            ``{category: [drugs, weapons]}`` (CSV/TSV columns, JSON fields).
        column: CSV/TSV column, JSON field or dataset column holding the prompt (default: the first of
            prompt, goal, text, instruction that exists).
        field: synonym of ``column`` for JSON sources.
        limit: keep at most this many prompts (after shuffling).
        shuffle: shuffle before ``limit``, with ``seed``.
        seed: seed of the shuffle.
        split: split of a Hugging Face dataset.
        jailbreak: wrap each prompt in the built-in jailbreak templates (round robin over templates).
    """

    path: str
    label: str | None = None
    name: str | None = None
    where: dict[str, str | list[str]] | None = None
    column: str | None = None
    field: str | None = None
    limit: int | None = None
    shuffle: bool = False
    seed: int = 0
    split: str = "train"
    jailbreak: bool = False

    @property
    def label_name(self) -> str:
        if self.label:
            return self.label
        if self.path in BUILTIN_SETS:
            return self.path
        return Path(self.path.removeprefix("hf:")).stem

    @property
    def source_name(self) -> str:
        if self.name:
            return self.name
        base = self.path if self.path in BUILTIN_SETS else Path(self.path.removeprefix("hf:")).stem
        if self.where:
            base += "[" + ",".join(f"{k}={_where_text(v)}" for k, v in self.where.items()) + "]"
        return base + ("+jailbreak" if self.jailbreak else "")


def _where_text(value: str | list[str]) -> str:
    return "|".join(value) if isinstance(value, list) else str(value)


def source_names(sources: list[PromptSource] | list[dict[str, Any]] | list[str]) -> list[str]:
    """Unique names of prompt sources (as stored in a feature file's ``sources`` attribute)."""
    names: list[str] = []
    for src in sources:
        if isinstance(src, str):  # files written by hand or by older tools: a name per source
            src = PromptSource(path=src, name=src)
        elif isinstance(src, dict):
            known = {f.name for f in dataclasses.fields(PromptSource)}
            src = PromptSource(**{k: v for k, v in src.items() if k in known})
        name, n = src.source_name, 2
        while name in names:
            name, n = f"{src.source_name}#{n}", n + 1
        names.append(name)
    return names


def _pick_column(available: list[str], wanted: str | None, where: str) -> str:
    if wanted:
        if wanted not in available:
            raise ProbingError(
                f"{where} has no column {wanted!r}; it has {available}: set `column` of this prompt source"
            )
        return wanted
    for name in DEFAULT_COLUMNS:
        if name in available:
            return name
    raise ProbingError(
        f"{where} has none of the default columns {list(DEFAULT_COLUMNS)} (it has {available}); "
        "set `column` of this prompt source"
    )


def _check_prompts(values: list[Any], where: str, first_row: int = 1) -> list[str]:
    out = []
    for i, value in enumerate(values):
        text = "" if value is None else str(value)
        if not text.strip():
            raise ProbingError(
                f"{where}: row {i + first_row} has an empty prompt; remove it or fix the file"
            )
        out.append(text)
    return out


def read_text(path: Path) -> str:
    """A prompt file's text: UTF-8 (a BOM is dropped); anything else is one clear error."""
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data[:4096]:
        raise ProbingError(
            f"{path} is not UTF-8 text (UTF-16 or binary content found); save it as UTF-8"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ProbingError(
            f"{path} is not UTF-8 text (undecodable byte at offset {err.start}); save it as UTF-8"
        ) from None


def _matches(record: dict[str, Any], where: dict[str, str | list[str]]) -> bool:
    for key, value in where.items():
        wanted = value if isinstance(value, list) else [value]
        if str(record.get(key)) not in {str(w) for w in wanted}:
            return False
    return True


def _filter(
    records: list[dict[str, Any]], where: dict[str, str | list[str]] | None, where_in: str
) -> list[dict[str, Any]]:
    if not where:
        return records
    keys = list(records[0]) if records else []
    missing = [k for k in where if k not in keys]
    if missing:
        raise ProbingError(
            f"{where_in} has no column {missing[0]!r} for `where` (it has {keys}); fix `where` of "
            "this prompt source"
        )
    kept = [r for r in records if _matches(r, where)]
    if not kept:
        raise ProbingError(f"{where_in}: no row matches where={where}; fix `where`")
    return kept


def text_lines(text: str) -> list[str]:
    """``text`` cut at ``\\n`` and ``\\r\\n`` only: form feeds, U+2028 or NEL inside a line stay in it
    (``str.splitlines`` would cut there too)."""
    return _NEWLINE.split(text)


def _check_quotes(text: str, delimiter: str, path: Path) -> None:
    """csv reads an unterminated quote as one field running to the end of the file: refuse it.
    (Other quoting errors are read as before, leniently.)"""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    row, start = 1, 1  # the record being read (the header is row 1) and its first line
    while True:
        try:
            next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            if "unexpected end of data" in str(err):
                raise ProbingError(
                    f"{path}: the quoted field in row {row} (line {start}) is never closed, so "
                    "the rest of the file would be one prompt; close the quote (a quote inside a "
                    'quoted field is written "")'
                ) from None
        row, start = row + 1, reader.line_num + 1


def _read_table(path: Path, column: str | None, where: dict | None = None) -> list[str]:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    text = read_text(path)
    _check_quotes(text, delimiter, path)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        raise ProbingError(f"{path} is empty; expected a header row and prompts")
    col = _pick_column(list(reader.fieldnames), column, str(path))
    rows = _filter(list(reader), where, str(path))
    return _check_prompts([row.get(col) for row in rows], f"{path} column {col!r}", first_row=2)


def _read_json(path: Path, field: str | None, where: dict | None = None) -> list[str]:
    text = read_text(path)
    try:
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text_lines(text) if line.strip()]
        else:
            data = json.loads(text) if text.strip() else []
            records = data.get("data", data) if isinstance(data, dict) else data
    except json.JSONDecodeError as err:
        raise ProbingError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(records, list):
        raise ProbingError(
            f"{path}: expected a list of records or strings, found {type(records).__name__}"
        )
    if records and all(isinstance(r, str) for r in records):
        if where:
            raise ProbingError(f"{path} holds plain strings: `where` needs records with fields")
        return _check_prompts(records, str(path))
    if not all(isinstance(r, dict) for r in records):
        raise ProbingError(f"{path}: expected every record to be an object (or every one a string)")
    keys = list(records[0]) if records else []
    key = _pick_column(keys, field, str(path))
    for i, r in enumerate(records):
        if key not in r:
            raise ProbingError(f"{path}: record {i + 1} has no field {key!r}; set `field`")
    records = _filter(records, where, str(path))
    return _check_prompts([r[key] for r in records], f"{path} field {key!r}")


def _read_parquet(path: Path, column: str | None) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ProbingError(
            "reading Parquet needs pyarrow: pip install 'probing[parquet]'"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several kinds for a file that is not Parquet
        raise ProbingError(f"{path} is not a readable Parquet file ({err})") from None
    col = _pick_column(table.column_names, column, str(path))
    return _check_prompts(table.column(col).to_pylist(), f"{path} column {col!r}")


def _read_hf(name: str, column: str | None, split: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise ProbingError(
            f"hf:{name} needs the datasets package: pip install 'probing[hf]'"
        ) from None
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as err:  # the datasets library raises many kinds
        raise ProbingError(
            f"cannot load Hugging Face dataset {name!r} split {split!r}: {err}"
        ) from None
    col = _pick_column(list(ds.column_names), column, f"hf:{name}")
    return _check_prompts(ds[col], f"hf:{name} column {col!r}")


def read_file(path: Path, column: str | None, where: dict | None = None) -> list[str]:
    if not path.exists():
        raise ProbingError(
            f"prompt file {path} does not exist; fix `path` of the prompt source "
            f"(or use a built-in set: {', '.join(BUILTIN_SETS)})"
        )
    if path.suffix not in SUFFIXES:
        raise ProbingError(
            f"{path}: unsupported prompt file type {path.suffix!r}; use one of {SUFFIXES}"
        )
    if path.stat().st_size == 0:
        raise ProbingError(f"prompt file {path} is empty")
    if where and path.suffix not in (".csv", ".tsv", ".json", ".jsonl"):
        raise ProbingError(
            f"{path}: `where` filters CSV/TSV columns or JSON fields, not {path.suffix} files"
        )
    if path.suffix in (".csv", ".tsv"):
        prompts = _read_table(path, column, where)
    elif path.suffix in (".json", ".jsonl"):
        prompts = _read_json(path, column, where)
    elif path.suffix == ".parquet":
        prompts = _read_parquet(path, column)
    else:
        prompts = [line for line in text_lines(read_text(path)) if line.strip()]
    if not prompts:
        raise ProbingError(f"prompt file {path} holds no prompts")
    return prompts


@lru_cache(maxsize=1)
def jailbreak_templates() -> tuple[dict[str, str], ...]:
    path = datasets_dir() / "jailbreak_templates.yaml"
    items = yaml.safe_load(path.read_text(encoding="utf-8"))
    return tuple(items)


def apply_jailbreak(goal: str, template: str) -> str:
    words = goal.split()
    return template.format(
        goal=goal,
        goal_base64=base64.b64encode(goal.encode()).decode(),
        goal_rot13=codecs.encode(goal, "rot13"),
        goal_reversed=" ".join(reversed(words)),
    )


def wrap_jailbreaks(goals: list[str]) -> list[str]:
    """Each goal in one template, cycling through all templates in file order."""
    templates = jailbreak_templates()
    return [
        apply_jailbreak(g, templates[i % len(templates)]["template"]) for i, g in enumerate(goals)
    ]


def _builtin(name: str, where: dict | None = None) -> list[str]:
    folder = datasets_dir()
    if name == "jailbreak":
        return wrap_jailbreaks(_builtin("malicious", where))
    return read_file(folder / f"{name}.csv", "prompt", where)


def load_source(src: PromptSource) -> list[str]:
    """The prompts of one source, shuffled/limited as configured."""
    if src.column and src.field and src.column != src.field:
        raise ProbingError(f"prompt source {src.path}: `column` and `field` disagree; set only one")
    column = src.column or src.field
    if src.limit is not None and src.limit < 1:
        raise ProbingError(f"prompt source {src.path}: limit must be >= 1, got {src.limit}")
    if src.path in BUILTIN_SETS:
        prompts = _builtin(src.path, src.where)
    elif src.path.startswith("hf:"):
        if src.where:
            raise ProbingError(
                f"prompt source {src.path}: `where` is not supported for hf: sources"
            )
        prompts = _read_hf(src.path[3:], column, src.split)
    else:
        prompts = read_file(Path(src.path).expanduser(), column, src.where)
    if src.shuffle:
        prompts = prompts.copy()
        random.Random(src.seed).shuffle(prompts)
    if src.limit is not None:
        prompts = prompts[: src.limit]
    if src.jailbreak:
        prompts = wrap_jailbreaks(prompts)
    return prompts


def load_prompts(sources: list[PromptSource]) -> tuple[list[str], list[int], list[int], list[str]]:
    """Concatenate sources: (prompts, label index per prompt, source index per prompt, label names)."""
    if not sources:
        raise ProbingError(
            "no prompt sources given; set `prompts` (e.g. [{path: normal}, {path: malicious}])"
        )
    label_names: list[str] = []
    prompts: list[str] = []
    labels: list[int] = []
    source_ids: list[int] = []
    for i, src in enumerate(sources):
        items = load_source(src)
        name = src.label_name
        if name not in label_names:
            label_names.append(name)
        prompts += items
        labels += [label_names.index(name)] * len(items)
        source_ids += [i] * len(items)
        log.info("prompt source %d: %s -> %d prompts labelled %r", i, src.path, len(items), name)
    return prompts, labels, source_ids, label_names
