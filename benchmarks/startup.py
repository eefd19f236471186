"""Start-up time of the ``metarec`` command: each command in a fresh process, the median of ``--runs`` runs.

    .venv/bin/python benchmarks/startup.py --runs 7            # prints the table and writes it into docs/cli.md
    .venv/bin/python benchmarks/startup.py --runs 3 --no-write

Times (wall clock, seconds) ``python -c "import torch"``, ``python -c "import lightning"``, ``metarec plugins`` and
``metarec fit --help``, run round-robin (one of each per round, so a burst of load on the machine hits all of
them), with ``OMP_NUM_THREADS=1`` and ``WANDB_MODE=offline`` in a scratch folder.  The targets (issue 18):
``metarec plugins`` <= 2 s, and ``metarec fit --help`` no slower than ``import lightning`` + 1 s.  The section
between the ``startup:begin`` / ``startup:end`` markers of docs/cli.md is replaced by the new table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cli.md"
BEGIN, END = "<!-- startup:begin (written by benchmarks/startup.py) -->", "<!-- startup:end -->"
PLUGINS_TARGET_S = 2.0
FIT_HELP_MARGIN_S = 1.0


def commands(python: str, metarec: str) -> dict[str, list[str]]:
    """Label -> argv of every measured command."""
    return {
        'python -c "import torch"': [python, "-c", "import torch"],
        'python -c "import lightning"': [python, "-c", "import lightning"],
        "metarec plugins": [metarec, "plugins"],
        "metarec fit --help": [metarec, "fit", "--help"],
    }


def time_once(argv: list[str], cwd: Path) -> float:
    """Seconds from start to exit of one fresh process; raises if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    start = time.perf_counter()
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {out.returncode}: {out.stderr[-500:]}")
    return elapsed


def measure(cmds: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """Label -> ``runs`` wall times, one of each command per round after one untimed warm-up round."""
    times: dict[str, list[float]] = {label: [] for label in cmds}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(runs + 1):
            for label, argv in cmds.items():
                elapsed = time_once(argv, Path(scratch))
                if round_:  # round 0 warms the file cache
                    times[label].append(elapsed)
    return times


def verdicts(medians: dict[str, float]) -> list[str]:
    """The issue's two targets, met or not, in words."""
    out = []
    plugins = medians.get("metarec plugins")
    if plugins is not None:
        out.append(f"`metarec plugins` ≤ {PLUGINS_TARGET_S:g} s: {'met' if plugins <= PLUGINS_TARGET_S else 'NOT met'} "
                   f"({plugins:.2f} s)")
    fit_help, lightning = medians.get("metarec fit --help"), medians.get('python -c "import lightning"')
    if fit_help is not None and lightning is not None:
        limit = lightning + FIT_HELP_MARGIN_S
        out.append(f"`metarec fit --help` ≤ `import lightning` + {FIT_HELP_MARGIN_S:g} s: "
                   f"{'met' if fit_help <= limit else 'NOT met'} ({fit_help:.2f} s against {limit:.2f} s)")
    return out


def render(times: dict[str, list[float]], machine: str, load: tuple[float, float, float], day: str) -> str:
    """The docs/cli.md section body: a table of median / min / max per command, then the verdicts."""
    runs = len(next(iter(times.values())))
    lines = [f"Measured {day} by `python benchmarks/startup.py --runs {runs}` on {machine} (load average before: "
             f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}); each command in a fresh process, {runs} runs, round-robin:",
             "", "| command | median | min | max |", "|---|---|---|---|"]
    for label, values in times.items():
        lines.append(f"| `{label}` | **{statistics.median(values):.2f} s** | {min(values):.2f} s | "
                     f"{max(values):.2f} s |")
    medians = {label: statistics.median(values) for label, values in times.items()}
    lines += ["", *(f"- {v}" for v in verdicts(medians))]
    return "\n".join(lines)


def replace_section(text: str, body: str) -> str:
    """``text`` with what lies between the markers replaced by ``body``; ValueError when the markers are missing."""
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        raise ValueError(f"docs/cli.md has no '{BEGIN}' ... '{END}' section to write the table into")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="timed runs per command (after one warm-up round)")
    p.add_argument("--only", nargs="+", default=None, help="measure only these labels (e.g. 'metarec plugins')")
    p.add_argument("--doc", type=Path, default=DOC, help="the Markdown file whose startup section is rewritten")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error(f"--runs {args.runs}: expected at least 1")
    metarec = str(Path(sys.executable).with_name("metarec"))
    cmds = commands(sys.executable, metarec)
    if args.only:
        unknown = [label for label in args.only if label not in cmds]
        if unknown:
            p.error(f"--only {unknown[0]!r}: expected one of {', '.join(map(repr, cmds))}")
        cmds = {label: cmds[label] for label in args.only}
    load = os.getloadavg()
    times = measure(cmds, args.runs)
    machine = f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, Python {platform.python_version()}"
    body = render(times, machine, load, date.today().isoformat())
    print(body)
    if not args.no_write:
        args.doc.write_text(replace_section(args.doc.read_text(), body))
        print(f"wrote {args.doc}")
    return times


if __name__ == "__main__":
    main()
