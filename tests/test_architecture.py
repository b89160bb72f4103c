"""The package's shape: no import cycle between modules of ``probing/``; imports inside functions
only for optional or heavy dependencies (and the listed ones still to be moved).

The graph has an edge A → B for every ``import``/``from ... import`` of B in A, at the top level,
inside a function (a function-local import that hides a cycle is still a cycle) or under
``if TYPE_CHECKING:`` (a type-only import that closes a cycle still ties the two modules together: move
the shared type to a third module). ``from probing.x import y`` is an edge to ``probing.x.y`` when
``y`` is a submodule, else to ``probing.x`` (its ``__init__``). No module imports another module's
private (``_name``) names: what a module shares is public.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "probing"

# Function-local imports of other packages: optional extras (not installed everywhere) or heavy
# libraries loaded only by the commands that need them. A new entry needs a reason like these.
LOCAL_THIRD_PARTY = {
    "datasets": "optional: Hugging Face prompt sources",
    "pyarrow": "optional: parquet prompt sources",
    "gguf": "optional: GGUF models",
    "wandb": "optional at run time: logging only when a W&B logger/project is configured",
    "sklearn": "weak classifiers only",
    "safetensors": "model cache only",
    "transformers": "heavy: only commands that load a model or tokenizer",
    "huggingface_hub": "heavy: only when a hub id is resolved (probing.models.hub)",
    "torch": "heavy: the model cache's conversion only",
    "lightning": "heavy: W&B logger class, only when a trainer is given",
    "matplotlib": "a figure the caller made with pyplot",
    "jsonargparse": "heavy: the parser only when a command runs",
    "fcntl": "POSIX only",
    "shutil": "stdlib",
    "inspect": "stdlib",
    "pickle": "stdlib",
}

# Function-local imports between modules of probing/ that exist today (module -> imported module).
# Each is a lazy import (a command's heavy dependencies) or a cycle still to be removed; new ones
# fail the test. Remove an entry when its import moves to the top of the module.
LOCAL_PROBING = {
    ("probing.compare.run", "probing.data"),
    ("probing.compare.run", "probing.probes.report"),
    ("probing.compare.run", "probing.probes.weak"),
    ("probing.compare.run", "probing.training.train"),
    ("probing.demo", "probing.compare.run"),
    ("probing.demo", "probing.data.options"),
    ("probing.demo", "probing.features.extract"),
    ("probing.demo", "probing.features.store"),
    ("probing.demo", "probing.generation.refusal"),
    ("probing.demo", "probing.grafting.run"),
    ("probing.demo", "probing.lens.run"),
    ("probing.demo", "probing.directions.run"),
    ("probing.demo", "probing.directions.config"),
    ("probing.demo", "probing.directions.locate"),
    ("probing.demo", "probing.models"),
    ("probing.demo", "probing.probes.weak"),
    ("probing.demo", "probing.probes.weak_config"),
    ("probing.demo", "probing.probes.checkpoint"),
    ("probing.demo", "probing.probes.transfer"),
    ("probing.demo", "probing.prompts"),
    ("probing.demo", "probing.training.train"),
    ("probing.grafting.callback", "probing.features.store"),
    ("probing.grafting.callback", "probing.models.load"),
    ("probing.generalize.run", "probing.probes.wandb_utils"),
    ("probing.directions.run", "probing.probes.wandb_utils"),  # only with --wandb_project
    ("probing.grafting.run", "probing.lens.emotions"),
    ("probing.grafting.run", "probing.probes.checkpoint"),
    ("probing.lens.analysis", "probing.models.load"),
    ("probing.lens.run", "probing.features.store"),
    ("probing.monitor.labelled", "probing.data"),
    ("probing.monitor.labelled", "probing.prompts.sources"),
    ("probing.monitor.screen", "probing.generation.generate"),
}

# Drivers (argv in, files out) sit above the library: no library module imports one (compare and
# the demo fit probes through `probing.training.train`, a library function over the Lightning CLI).


def is_driver(module: str) -> bool:
    """``probing.cli`` (and ``python -m probing``), ``probing.demo*``, every ``*.cli`` (the Lightning
    commands' ``probing.training.cli``) and the light help ``probing.training.help``."""
    return (
        module in ("probing.cli", "probing.__main__")
        or module.startswith("probing.demo")
        or module.endswith(".cli")
        or module == "probing.training.help"
    )


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names of the modules ``node`` imports (probing's resolved to a file's module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
        for alias in node.names
    ]


def imports(module: str) -> tuple[set[str], set[str]]:
    """``(top-level, function-local)`` imported module names of ``module``; those under
    ``if TYPE_CHECKING:`` count as top-level."""
    top: set[str] = set()
    local: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            (local if in_function else top).update(_targets(module, node))
            return
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(MODULES[module].read_text()), False)
    return top, local


def _own(name: str) -> str | None:
    """The module of probing/ that ``name`` is (or is in), or None for another package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module in MODULES:
        top, local = imports(module)
        targets = {_own(t) for t in top | local if t.split(".")[0] == "probing"}
        edges[module] = {t for t in targets if t is not None and t != module}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def _path(edges: dict[str, set[str]], component: frozenset[str]) -> str:
    """One cycle through ``component``, written ``a -> b -> a``."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges[v] & component):
            if w == start:
                return " -> ".join([*paths[v], start])
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return ", ".join(sorted(component))


def test_the_graph_sees_the_package():
    edges = graph()
    assert "probing.probes.module" in edges and "probing.probes.heads" in edges
    assert "probing.probes.heads" in edges["probing.probes.module"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_models_keep_their_last_logits_through_the_index_form():
    """``logits_to_keep=1`` slices a strided view that the CPU's bfloat16 matmul multiplies ~300x
    slower; every call passes ``probing.models.batching.last_logits()`` instead."""
    found = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if re.search(r"logits_to_keep\s*=\s*1\s*[,)\n]", path.read_text(encoding="utf-8"))
    ]
    assert not found, (
        f"logits_to_keep=1 in {found}: pass last_logits() (probing/models/batching.py)"
    )


def test_no_module_over_400_lines():
    """One idea per module: a module past 400 lines is split by idea (STYLE.md)."""
    long = {
        str(path.relative_to(PACKAGE.parent)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert not long, f"modules over 400 lines: {long}"


def test_no_import_cycles():
    edges = graph()
    found = cycles(edges)
    assert not found, "import cycles in probing/:\n" + "\n".join(_path(edges, c) for c in found)


def test_type_only_imports_count_as_edges():
    """``features/plan`` ⇄ ``features/extract`` and ``demo`` ⇄ ``demo_report`` were cycles hidden
    behind ``if TYPE_CHECKING:``; such an import is an edge like any other."""
    top, _ = imports("probing.monitor.labelled")
    assert "probing.monitor.probe" in top  # imported only under TYPE_CHECKING there


def private_imports() -> list[str]:
    """``module: from other import _name`` for every private name a module takes from another
    module of probing/ (dunders such as ``__version__`` are public)."""
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            for alias, target in zip(node.names, _targets(module, node), strict=True):
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and target.split(".")[0] == "probing" and _own(target) != module:
                    found.append(f"{module}: from {target} import {alias.name}")
    return found


def test_no_module_imports_private_names():
    """``data/datamodule.py`` stayed under 400 lines by importing eight private names of the modules
    split off it: share a name by making it public, or move the code that needs it."""
    found = private_imports()
    assert not found, "private names imported across modules:\n" + "\n".join(found)


# The HDF5 layout is read and written in these modules only; the rest read through FeatureFile.
LAYOUT_MODULES = {
    "probing.features.atomic",  # opens the partial file to discard or finish it
    "probing.features.checks",
    "probing.features.labels",  # adds a label set to a copy of the file
    "probing.features.store",
    "probing.features.writer",
}


def test_only_the_store_reads_the_hdf5_layout():
    """``["hidden"]`` was indexed in six modules (data rows, data module, monitor, lens, info,
    checks) through a public ``FeatureFile.file``."""
    layout = ('["hidden"]', '["lens_ids"]', '["lens_logits"]', '["rows_done"]', "h5py.File(")
    found = [
        f"{module}: {name}"
        for module, path in MODULES.items()
        if module not in LAYOUT_MODULES
        for name in layout
        if name in path.read_text()
    ]
    assert not found, "read the feature file through FeatureFile:\n" + "\n".join(found)


def test_library_modules_import_no_driver():
    """``probes`` → ``training`` and ``grafting/callback`` → ``grafting/cli`` were such imports."""
    upward = {
        (module, target)
        for module, targets in graph().items()
        if not is_driver(module)
        for target in targets
        if is_driver(target)
    }
    assert not upward, f"library modules importing a driver: {sorted(upward)}"


def lazy_export(module: str, own: str) -> bool:
    """A package's ``__init__`` importing its own submodule in a function: its names resolved on first
    use (PEP 562 ``__getattr__``), so that importing one light submodule (a command's options, for
    ``--help``) does not import the package's heavy ones (torch, Lightning)."""
    return MODULES[module].name == "__init__.py" and own.startswith(module + ".")


def test_function_local_imports_are_listed():
    """New function-local imports fail: move them to the top, or list an optional dependency."""
    new, seen = [], set()
    for module in MODULES:
        _, local = imports(module)
        for target in sorted(local):
            own = _own(target) if target.split(".")[0] == "probing" else None
            if own is not None and lazy_export(module, own):
                continue
            if own is not None:
                seen.add((module, own))
                if (module, own) not in LOCAL_PROBING:
                    new.append(f"{module}: import {target} inside a function")
            elif target.split(".")[0] not in LOCAL_THIRD_PARTY:
                new.append(
                    f"{module}: import {target} inside a function (not an optional dependency)"
                )
    assert not new, "\n".join(new)
    stale = sorted(LOCAL_PROBING - seen)
    assert not stale, f"listed in LOCAL_PROBING but no longer imported in a function: {stale}"


def test_commands_that_train_nothing_start_without_lightning():
    """Lightning (with torchmetrics, which imports transformers, scipy.signal and matplotlib) costs
    most of a process's start-up: the commands that train nothing must not import it."""
    import subprocess
    import sys

    commands = [
        "probing.cli",
        "probing.features.extract",
        "probing.features.info",
        "probing.features.shards",
        "probing.lens.run",
        "probing.generation.refusal",
        "probing.grafting.run",
        "probing.compare.run",
        "probing.models.cache",
    ]
    code = f"import sys\nfor m in {commands!r}: __import__(m)\nprint('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
