"""Compare models and prompt formats: the paper's accuracy grid (weak classifiers per layer, per run).

A comparison is a list of runs ``{model, template, system_prompt}`` over one prompt set. Each run is
extracted into ``<features_dir>/<run>.h5`` (an identical finished file is reused without loading the
model), checked to hold the comparison's prompts, and the paper's weak classifiers are trained on every
layer. A run that fails (model not loadable, package missing, another prompt set) is recorded with a
one-line reason and the others go on. Layers are compared by index (0 = embeddings, i = output of
decoder block i) and by relative depth ``layer / num_decoder_layers`` (0 = embeddings, 1 = last).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probing.compare import plots
from probing.compare.output import report
from probing.compare.spec import (
    GRID_PNG,
    GRID_RELATIVE_PNG,
    METRIC_COLUMNS,
    METRICS_CSV,
    NO_CONTEXT_LIMIT,
    PROBE_VAL_FRACTION,
    REPORT_MD,
    RUNS_JSON,
    SUMMARY_COLUMNS,
    SUMMARY_CSV,
    CompareConfig,
    CompareResult,
    RunResult,
    RunSpec,
    validate,
)
from probing.compare.summary import (
    first_crossing,  # noqa: F401 (importable from here, as before)
    markdown,
    summarize,
)
from probing.errors import ProbingError
from probing.features.extract import ExtractConfig, extract
from probing.features.plan import fingerprint, plan_rows
from probing.features.store import FeatureFile, read_meta
from probing.models.load import (
    ModelConfig,
    ModelSource,
    load_model,
    load_tokenizer,
    model_identity,
    resolve_model,
)
from probing.prompts.sources import PromptSource, load_prompts
from probing.tables import write_csv

log = logging.getLogger(__name__)


# -- the prompt set every run must hold ---------------------------------------------------------


@dataclass
class PromptSet:
    """The comparison's prompts: (prompt, label name) per prompt index."""

    items: list[tuple[str, str]]
    origin: str

    @classmethod
    def from_sources(cls, sources: list[PromptSource]) -> PromptSet:
        prompts, labels, _, names = load_prompts(sources)
        return cls([(p, names[y]) for p, y in zip(prompts, labels)], "`prompts`")

    @classmethod
    def from_file(cls, ff: FeatureFile, origin: str) -> PromptSet:
        items: list[tuple[str, str] | None] = [None] * (int(max(_col(ff, "prompt_index"))) + 1)
        for i, p, y in _file_rows(ff):
            items[i] = (p, ff.label_names[y])
        return cls([it or ("", "") for it in items], origin)

    def check(self, ff: FeatureFile, run: str) -> int:
        """Raises unless every row of ``ff`` is the same prompt and label; returns rows missing."""
        differ = sum(
            not (0 <= i < len(self.items) and self.items[i] == (p, ff.label_names[y]))
            for i, p, y in _file_rows(ff)
        )
        missing = len(self.items) - ff.num_rows
        skipped = sum((ff.meta.get("skipped") or {}).values())
        if differ or missing != skipped:
            what = (
                f"{differ} of {ff.num_rows} rows differ in prompt or label"
                if differ
                else f"{ff.num_rows} rows, {skipped} prompts skipped, for {len(self.items)} prompts"
            )
            raise ProbingError(
                f"run {run!r}: {ff.path} holds another prompt set than {self.origin} ({what}); a "
                "comparison needs the same prompts in every run: drop the run's `features` to "
                "extract it, or fix `prompts`"
            )
        return missing


def _col(ff: FeatureFile, name: str) -> list[Any]:
    return list(ff.column(name))


def _file_rows(ff: FeatureFile) -> list[tuple[int, str, int]]:
    return list(
        zip(
            (int(i) for i in _col(ff, "prompt_index")),
            _col(ff, "prompt"),
            (int(y) for y in _col(ff, "label")),
        )
    )


# -- one run --------------------------------------------------------------------------------------


def extract_config(cfg: CompareConfig, spec: RunSpec) -> ExtractConfig:
    """The extraction behind one run (``resume`` unless ``overwrite``)."""
    return ExtractConfig(
        model=ModelConfig(
            name=spec.model, gguf_file=spec.gguf_file, dtype=cfg.dtype, device=cfg.device
        ),
        prompts=list(cfg.prompts),
        output=str(Path(cfg.features_dir) / f"{spec.run_name}.h5"),
        template=spec.template,
        system_prompt=spec.system_prompt,
        positions=cfg.positions,
        lens_top_k=cfg.lens_top_k,
        batch_size=cfg.batch_size,
        storage_dtype=cfg.storage_dtype,
        resume=not cfg.overwrite,
        overwrite=cfg.overwrite,
        progress=cfg.progress,
    )


class _Models:
    """Keeps the last model (resolved once, its tokenizer and weights) for the next run of it."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.source: ModelSource | None = None
        self.tokenizer: Any = None
        self.lm: Any = None

    def source_for(self, mc: ModelConfig) -> ModelSource:
        key = dataclasses.astuple(mc)
        if key != self.key or self.source is None:
            self.key, self.tokenizer, self.lm = key, None, None
            self.source = resolve_model(mc)
        return self.source

    def tokenizer_for(self, mc: ModelConfig) -> Any:
        source = self.source_for(mc)
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(source)
        return self.tokenizer

    def model_for(self, mc: ModelConfig) -> Any:
        tokenizer = self.tokenizer_for(mc)
        if self.lm is None:
            self.lm = load_model(self.source_for(mc), tokenizer)
        return self.lm


def ensure_features(cfg: CompareConfig, spec: RunSpec, models: _Models) -> tuple[Path, bool]:
    """The run's feature file and whether an existing one was reused (extracting it if needed)."""
    if spec.features:
        return Path(spec.features), True
    ecfg = extract_config(cfg, spec)
    path = Path(ecfg.output)
    tokenizer = models.tokenizer_for(ecfg.model)
    if path.exists() and not cfg.overwrite:
        try:
            meta = read_meta(path)
        except ProbingError:
            meta = {}
        plan = plan_rows(ecfg, tokenizer, NO_CONTEXT_LIMIT)
        if meta.get("complete") and meta.get("fingerprint") == fingerprint(
            ecfg, model_identity(models.source_for(ecfg.model)), plan
        ):
            log.info("%s: reusing %s (same model, prompts and settings)", spec.run_name, path)
            return path, True
    path.parent.mkdir(parents=True, exist_ok=True)
    return extract(ecfg, models.model_for(ecfg.model)), False


def weak_metrics(cfg: CompareConfig, path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The weak classifiers' per-layer rows (``layer,probe,split,accuracy,f1,auroc``) and metadata."""
    from probing.data import ActivationDataModule
    from probing.probes.weak import weak_rows

    f = cfg.test_fraction
    dm = ActivationDataModule(str(path), layers="all", split=(1 - f, 0.0, f), seed=cfg.seed)
    rows = weak_rows(dm, cfg.classifiers, mlp_max_iter=cfg.mlp_max_iter)
    return rows, dict(dm.meta)


def probe_metrics(
    cfg: CompareConfig, path: Path, probe_config: str, directory: Path
) -> list[dict[str, Any]]:
    """Train the probes of ``probe_config`` on ``path`` (``probing fit``); their test rows."""
    import shutil

    from probing.probes.report import read_metrics
    from probing.training.train import train

    shutil.rmtree(directory, ignore_errors=True)  # compare-owned: no stale checkpoints or reports
    f = cfg.test_fraction
    train(
        probe_config,
        {
            "data.path": path,
            "data.classes": None,
            "data.split": [round(1 - f - PROBE_VAL_FRACTION, 6), PROBE_VAL_FRACTION, f],
            "data.seed": cfg.seed,
            "seed_everything": cfg.seed,
            "trainer.logger": False,
            "trainer.default_root_dir": directory,
            "trainer.enable_progress_bar": cfg.progress,
            "trainer.enable_model_summary": False,
        },
    )
    # the grid is per layer: the text baseline (no layer) stays in the probe run's own report
    rows = [r for r in read_metrics(directory) if r["split"] == "test" and r["layer"] is not None]
    return [{**r, "probe": f"probe-{r['probe']}"} for r in rows]  # apart from the weak `mlp`


def run_one(
    cfg: CompareConfig, spec: RunSpec, models: _Models, reference: PromptSet | None
) -> tuple[RunResult, PromptSet | None]:
    """Extract (or reuse), check the prompt set, train; failures become a ``failed`` result."""
    result = RunResult(name=spec.run_name, spec=spec)
    start = time.perf_counter()
    try:
        path, result.reused = ensure_features(cfg, spec, models)
        result.features = str(path)
        with FeatureFile(path) as ff:
            if reference is None:
                reference = PromptSet.from_file(ff, f"run {spec.run_name!r}")
            missing = reference.check(ff, spec.run_name)
            template = ff.meta.get("template")
        if missing:
            log.warning(
                "%s: %d prompts have no row (skipped at extraction)", spec.run_name, missing
            )
        if template != spec.template:
            raise ProbingError(
                f"run {spec.run_name!r}: {path} was extracted with template {template!r}, the run "
                f"says {spec.template!r}; fix the run's `template` or `features`"
            )
        rows, result.meta = weak_metrics(cfg, path)
        for probe in cfg.probes:
            where = Path(cfg.output_dir) / "probes" / spec.run_name / Path(probe).stem
            rows += probe_metrics(cfg, path, probe, where)
        result.num_layers = int(result.meta["num_layers"])
        result.rows = [_metric_row(result, r) for r in rows]
    except ProbingError as err:
        _fail(result, str(err))
    except Exception as err:  # a bug: keep its traceback in the log, let the other runs finish
        log.exception("run %r failed unexpectedly", spec.run_name)
        _fail(result, f"{type(err).__name__}: {err} (unexpected; traceback in the log)")
    result.seconds = time.perf_counter() - start
    return result, reference


def _fail(result: RunResult, message: str) -> None:
    result.status = "failed"
    result.reason = " ".join(message.split())  # one line
    log.error("run %r failed: %s", result.name, result.reason)


def _metric_row(result: RunResult, row: dict[str, Any]) -> dict[str, Any]:
    depth = max(result.num_layers - 1, 1)
    return {
        "run": result.name,
        "model": result.spec.model,
        "template": result.spec.template,
        "classifier": row["probe"],
        "layer": int(row["layer"]),
        "relative_depth": int(row["layer"]) / depth,
        "split": row["split"],
        "accuracy": row["accuracy"],
        "f1": row["f1"],
        "auroc": row["auroc"],
    }


# -- the whole comparison ----------------------------------------------------------------------


def compare(cfg: CompareConfig) -> CompareResult:
    """Run every run (failures recorded, not raised), then write CSVs, plots and the summary."""
    validate(cfg)
    reference = PromptSet.from_sources(cfg.prompts) if cfg.prompts else None
    models = _Models()
    results = []
    for i, spec in enumerate(cfg.runs, 1):
        log.info(
            "run %d of %d: %s (%s, %s)", i, len(cfg.runs), spec.run_name, spec.model, spec.template
        )
        res, reference = run_one(cfg, spec, models, reference)
        results.append(res)
    models = _Models()  # free the last model before plotting
    metrics = [row for r in results for row in r.rows]
    summary = summarize(results, cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": write_csv(out / METRICS_CSV, metrics, METRIC_COLUMNS),
        "summary": write_csv(out / SUMMARY_CSV, summary, SUMMARY_COLUMNS),
    }
    title = f"{' vs '.join(_classes(results))}: test accuracy per layer"
    paths["grid"] = plots.grid(results, cfg, out / GRID_PNG, "layer", title)
    paths["grid_relative"] = plots.grid(
        results, cfg, out / GRID_RELATIVE_PNG, "relative_depth", title
    )
    result = CompareResult(results, metrics, summary, paths)
    paths["report"] = out / REPORT_MD
    paths["report"].write_text(markdown(result, cfg))
    paths["runs"] = out / RUNS_JSON
    paths["runs"].write_text(json.dumps(_runs_record(result, cfg), indent=1, default=str) + "\n")
    return result


def run_compare(cfg: CompareConfig) -> int:
    """Compare and log each run's summary; returns 0, or 1 when some runs failed; raises
    :class:`ProbingError` when every run failed."""
    return report(cfg, compare(cfg))


def _classes(results: list[RunResult]) -> list[str]:
    for r in results:
        if r.meta.get("label_names"):
            return list(r.meta["label_names"])
    return []


def _runs_record(result: CompareResult, cfg: CompareConfig) -> dict[str, Any]:
    from probing.probes.report import provenance

    return {
        "config": dataclasses.asdict(cfg),
        "runs": [
            {
                "name": r.name,
                "status": r.status,
                "reason": r.reason,
                "features": r.features,
                "reused": r.reused,
                "seconds": round(r.seconds, 2),
                "spec": dataclasses.asdict(r.spec),
                "feature_meta": provenance(r.meta),
            }
            for r in result.runs
        ],
        "summary": result.summary,
    }
