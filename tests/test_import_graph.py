"""minicnn's modules import only downward, through the tiers, and never in a cycle.

The tiers, bottom up (a module may import its own tier and those below it):
backend (with strict and the dependency-free helpers) -> ops -> activations and
gradcheck -> layers -> losses and optimizers -> what the model is made of
(inspection, the fusion plan, data checks, weight files, callbacks) -> the
training loop -> the model (``Sequential.fit`` runs the loop; the loop drives
the model through its public step API and never imports it) -> data and
pictures. A module not named here counts as top tier: it may import anything,
and nothing named here may import it.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minicnn"

TIERS = [
    ("minicnn.strict", "minicnn.fileio", "minicnn.initializers", "minicnn.regularizers",
     "minicnn.schedules",
     "minicnn.utils", "minicnn.progbar", "minicnn.backend"),
    ("minicnn.ops",),
    ("minicnn.activations", "minicnn.gradcheck"),
    ("minicnn.layers",),
    ("minicnn.losses", "minicnn.metrics", "minicnn.optimizers"),
    ("minicnn.inspection", "minicnn.plan", "minicnn.datachecks", "minicnn.serialization",
     "minicnn.callbacks", "minicnn.distributed"),
    ("minicnn.training",),
    ("minicnn.models",),
    ("minicnn.datasets", "minicnn.preprocessing", "minicnn.viz"),
]


def tier(module: str) -> int:
    for rank, prefixes in enumerate(TIERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return len(TIERS)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports(path: Path) -> set[str]:
    """The minicnn modules ``path`` imports (``from a import b`` counts as a.b when b is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("minicnn")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minicnn"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if is_module(sub) else node.module)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_no_module_imports_a_higher_tier():
    upward = [f"{m} (tier {tier(m)}) imports {d} (tier {tier(d)})"
              for m, deps in graph().items() if m != "minicnn"
              for d in deps if tier(d) > tier(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    edges = graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(edges.get(module, ())):
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
