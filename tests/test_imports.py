"""The import graph of ``metarec_pl`` points one way: no circle among its modules, and no ``metarec_pl`` import
inside a function (the usual way to hide a circle), except the few lazy imports made for start-up time below.
Read from the source with ``ast``: nothing is imported."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "metarec_pl"

# (module, imported module) pairs allowed inside functions, each for a reason other than a circle
LAZY_ALLOWED = {
    # start-up time: ``metarec plugins`` imports only pluggy and the registry; other subcommands import Lightning
    ("metarec_pl.entry", "metarec_pl.plugins"),
    ("metarec_pl.entry", "metarec_pl.cli"),
    # pending: data/text.py (the data layer's owner) imports the registry in TextDataset.__init__; no circle
    # needs it (plugins.py imports only hookspecs), so it can move to the top of the module
    ("metarec_pl.data.text", "metarec_pl.plugins"),
}
# ``metarec_pl/__init__.py``'s ``__getattr__`` and the registry's 'module:Class' references import lazily through
# ``importlib``, not import statements, and are start-up-time choices too: this test does not see them.


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(node: ast.AST, known: dict[str, Path]) -> set[str]:
    """The metarec_pl modules an import statement loads (``from pkg import sub`` counts ``pkg.sub``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
    else:
        return set()
    return {n for n in names if n.split(".")[0] == "metarec_pl"}


def graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """Module-level import edges, and (module, imported, line) of every import inside a function."""
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    local = []
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in
                       ast.unparse(node.test) for n in ast.walk(node)}
        in_function = {id(n) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(node) if n is not node}
        for node in ast.walk(tree):
            targets = imported(node, known) - {name}
            if not targets or id(node) in typing_only:
                continue
            if id(node) in in_function:
                local += [(name, t, node.lineno) for t in targets]
            else:
                edges[name] |= {t for t in targets if t in known}
    return edges, local


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_the_reader_sees_the_real_imports():
    """The parser finds the edges it must (so an empty graph cannot pass the tests below)."""
    edges, local = graph()
    assert "metarec_pl.inner.planner" in edges["metarec_pl.inner"]
    assert "metarec_pl.bilevel" in edges["metarec_pl.recommend"]
    assert {"metarec_pl.inner", "metarec_pl.results", "metarec_pl.losses"} <= edges["metarec_pl.algorithms.base"]
    assert ("metarec_pl.entry", "metarec_pl.cli") in {(m, t) for m, t, _ in local}


def test_no_import_circle():
    edges, _ = graph()
    assert cycles(edges) == []


def test_a_made_circle_is_found():
    edges, _ = graph()
    edges["metarec_pl.results"] = edges["metarec_pl.results"] | {"metarec_pl.algorithms.base"}
    assert any("metarec_pl.results" in c and "metarec_pl.algorithms.base" in c for c in cycles(edges))


def test_no_function_level_import_of_metarec_pl_beyond_the_start_up_ones():
    _, local = graph()
    extra = [f"{m}:{line} imports {t}" for m, t, line in local if (m, t) not in LAZY_ALLOWED]
    assert not extra, extra


def test_leaf_modules_import_no_other_metarec_pl_module():
    """Result types and losses are leaves: every layer may import them."""
    edges, _ = graph()
    assert edges["metarec_pl.results"] == set() and edges["metarec_pl.losses"] == set()
