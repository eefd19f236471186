"""Every function in metarec_pl/ stays readable: cyclomatic complexity <= 15 (radon, McCabe 1976), as issue 20 set."""

from pathlib import Path

from radon.complexity import cc_visit

PACKAGE = Path(__file__).resolve().parents[1] / "metarec_pl"
LIMIT = 15


def test_no_function_above_the_complexity_limit():
    over = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for block in cc_visit(path.read_text()):
            if block.complexity > LIMIT:
                over.append(f"{path.relative_to(PACKAGE.parent)}:{block.lineno} {block.fullname} {block.complexity}")
    assert not over, f"functions above cyclomatic complexity {LIMIT}: {over}"


def test_the_check_sees_a_complex_function():
    branches = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(LIMIT + 1))
    (block,) = cc_visit(f"def f(x):\n{branches}\n    return -1\n")
    assert block.complexity == LIMIT + 2
