"""The package's layers (docs/ARCHITECTURE.md): every import of a ``sage_jax`` module,
at module level or inside a function, points to the same layer or one below, and no
two modules import each other, directly or around a loop. Read from the source with
``ast``; nothing is imported."""

from __future__ import annotations

import ast
import functools
import os

import pytest

from fixture_utils import ROOT

PACKAGE = os.path.join(ROOT, "sage_jax")

# lowest first; a module belongs to the first entry that is its name or a prefix of it
LAYERS = [
    ("base", ["sage_jax.errors", "sage_jax.images", "sage_jax.parallel", "sage_jax.plots", "sage_jax.assets"]),
    ("data", ["sage_jax.data"]),
    ("nn", ["sage_jax.nn"]),
    ("models", ["sage_jax.models"]),
    ("checkpoints", ["sage_jax.checkpoints"]),
    ("method", ["sage_jax.sage", "sage_jax.inversion", "sage_jax.statistics", "sage_jax.generation"]),
    ("train", ["sage_jax.train"]),
    ("metrics", ["sage_jax.metrics"]),
    # config assembles its defaults from the modules that read them (trainers, networks,
    # generation, inversion, oracles), so it sits above them all
    ("workflows", ["sage_jax.config", "sage_jax.pipeline", "sage_jax.evaluation", "sage_jax.demo",
                   "sage_jax.glyph_demo"]),
    ("cli", ["sage_jax.cli"]),
]


def _module_name(path: str, root: str = ROOT) -> str:
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def _modules(root: str = ROOT) -> dict[str, str]:
    out = {}
    for d, _, files in os.walk(os.path.join(root, "sage_jax")):
        for f in files:
            if f.endswith(".py"):
                p = os.path.join(d, f)
                out[_module_name(p, root)] = p
    return out


def _resolve(name: str, modules) -> str | None:
    """The module ``name`` is, or the deepest package of it (``a.b.func`` -> ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: str, modules, root: str = ROOT) -> set[str]:
    """The ``sage_jax`` modules ``path`` imports (``from pkg import sub`` counts as ``sub``)."""
    me = _module_name(path, root)
    package = me if path.endswith("__init__.py") else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n.startswith("sage_jax."):
                target = _resolve(n, modules)
                if target and target != me:
                    out.add(target)
    return out


def layer_of(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise KeyError(module)


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return {m: imports_of(p, modules) for m, p in modules.items()}


def test_every_module_has_a_layer(graph):
    missing = [m for m in graph if m != "sage_jax" and not any(
        m == p or m.startswith(p + ".") for _, ps in LAYERS for p in ps)]
    assert not missing, f"modules in no layer of LAYERS (add them, and to docs/ARCHITECTURE.md): {missing}"


def upward(graph) -> list[str]:
    return sorted(f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
                  for m, targets in graph.items() if m != "sage_jax"
                  for t in targets if t != "sage_jax" and layer_of(t) > layer_of(m))


def test_imports_point_down(graph):
    up = upward(graph)
    assert not up, "imports that run back up a layer:\n" + "\n".join(up)


def _cycle(graph) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycles(graph):
    # a package's __init__ may gather its submodules (checkpoints/__init__ does); a
    # submodule importing its own package's __init__ back would then be a loop
    cycle = _cycle(graph)
    assert cycle is None, "modules that import each other: " + " -> ".join(cycle)


def test_the_checks_catch_what_they_are_for(tmp_path):
    """A function-level import, a relative one and ``from package import module`` are
    all seen, an upward one is named, and a loop is found."""
    for f in ("__init__.py", "cli.py", "data/__init__.py", "data/fake.py", "metrics/__init__.py",
              "metrics/fid.py"):
        (tmp_path / "sage_jax" / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "sage_jax" / f).write_text("")
    (tmp_path / "sage_jax" / "data" / "fake.py").write_text(
        "import numpy\n\ndef f():\n    from sage_jax.cli import main\n    from ..metrics import fid\n"
        "    from . import fake\n")
    modules = _modules(str(tmp_path))
    g = {m: imports_of(p, modules, str(tmp_path)) for m, p in modules.items()}
    assert g["sage_jax.data.fake"] == {"sage_jax.cli", "sage_jax.metrics.fid"}
    assert upward(g) == ["sage_jax.data.fake (data) imports sage_jax.cli (cli)",
                         "sage_jax.data.fake (data) imports sage_jax.metrics.fid (metrics)"]
    assert _cycle(g) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@functools.lru_cache(maxsize=None)
def _distributions() -> dict:
    from importlib.metadata import packages_distributions

    return packages_distributions()


def _distribution_of(top: str) -> str | None:
    names = _distributions().get(top, [])
    return names[0].lower().replace("_", "-") if names else None


def test_the_package_imports_only_its_runtime_dependencies():
    """The demo's install is ``pip install -e .`` (no test extras): every third-party
    module the package imports, anywhere, must come from a distribution that the runtime
    dependencies bring, never from a test-only one (pytest, hypothesis, tensorboard...)."""
    import sys
    import tomllib
    from importlib.metadata import requires

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    dev_only = {r.split(">")[0].split("=")[0].split("[")[0].strip().lower()
                for r in project["optional-dependencies"]["dev"]}
    # what the runtime dependencies bring, transitively
    wanted = [r.split(">")[0].split("=")[0].split("[")[0].split(";")[0].strip().lower() for r in project["dependencies"]]
    brought, stack = set(), list(wanted)
    while stack:
        name = stack.pop().replace("_", "-")
        if name in brought:
            continue
        brought.add(name)
        try:
            reqs = requires(name) or []
        except Exception:
            continue
        stack += [r.split(";")[0].split(">")[0].split("<")[0].split("=")[0].split("!")[0].split("~")[0]
                  .split("[")[0].split("(")[0].strip().lower() for r in reqs if "extra ==" not in r]
    assert dev_only - brought, "the test extras add nothing: this test could not fail"
    wrong = set()
    for path in _modules().values():
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top == "sage_jax" or top in sys.stdlib_module_names:
                    continue
                dist = _distribution_of(top)
                if dist in dev_only - brought or (dist is None and top in dev_only):
                    wrong.add(f"{os.path.relpath(path, ROOT)} imports {top} ({dist})")
    assert not wrong, f"test-only dependencies imported by the package: {sorted(wrong)}"


def _architecture_doc() -> str:
    with open(os.path.join(ROOT, "docs", "ARCHITECTURE.md")) as f:
        return f.read()


def test_the_architecture_document_lists_the_layers_of_the_test():
    """docs/ARCHITECTURE.md's table names, row by row, the modules of ``LAYERS``; its
    cli row names every command module of ``cli.GROUPS``."""
    import re

    rows = [line.split("|")[1:4] for line in _architecture_doc().splitlines()
            if line.startswith("| ") and not line.startswith("| layer") and not line.startswith("| ---")]
    assert [r[0].strip() for r in rows] == [name for name, _ in LAYERS]
    for (name, prefixes), (_, modules, owns) in zip(LAYERS, rows):
        named = {"sage_jax." + m.strip("/").removesuffix(".py").replace("/", ".")
                 for m in re.findall(r"`([^`]+)`", modules)}
        assert named == set(prefixes), f"layer {name}: the document names {sorted(named)}, LAYERS {prefixes}"
    cli_row = rows[[n for n, _ in LAYERS].index("cli")][2]
    named = set(re.findall(r"`(\w+)`", cli_row))
    files = {f[:-3] for f in os.listdir(os.path.join(PACKAGE, "cli")) if f.endswith(".py") and not f.startswith("_")}
    assert files <= named, f"cli modules the document does not name: {sorted(files - named)}"


def test_the_architecture_document_names_files_and_functions_that_exist():
    """Every ``path.py`` and ``path.py:function`` of docs/ARCHITECTURE.md exists (paths
    inside the package, or the repository's ``tests/``)."""
    import re

    missing = []
    for path, func in re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py)(?::(\w+))?`", _architecture_doc()):
        full = os.path.join(ROOT, path) if path.startswith("tests/") else os.path.join(PACKAGE, path)
        if not os.path.isfile(full):
            missing.append(path)
        elif func and not re.search(rf"^\s*(def|class) {func}\b", open(full).read(), re.M):
            missing.append(f"{path}:{func}")
    assert not missing, f"docs/ARCHITECTURE.md names what does not exist: {missing}"
