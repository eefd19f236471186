"""In-process runs of the ``metarec`` command (``metarec_pl.cli.main``) for table-driven CLI tests."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml

from metarec_pl.cli import main

ROOT = Path(__file__).resolve().parents[1]


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("metarec: error:")]

    def metric(self, name: str) -> float:
        """A value of Lightning's printed results table (``test/mae`` ...)."""
        match = re.search(rf"[│|]\s*{re.escape(name)}\s*[│|]\s*([-0-9.eE+nai]+)\s*[│|]", self.out)
        assert match, f"{name} not in the printed results:\n{self.out[-2000:]}"
        return float(match.group(1))


def run(argv: Sequence[str], cwd: Optional[Path] = None) -> Run:
    """``metarec <argv>`` in this process (in ``cwd``); the exit code (0 without SystemExit), stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    old, argv0 = Path.cwd(), sys.argv
    if cwd is not None:
        os.chdir(cwd)
    sys.argv = ["metarec"]  # LightningCLI warns when both sys.argv and args hold arguments
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(argv))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(old)
        sys.argv = argv0
    return Run(code, out.getvalue(), err.getvalue())


def listing(folder: Path) -> set[str]:
    """Every path under ``folder`` (relative), to compare before and after a run."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def small_quickstart(tmp: Path, **trainer) -> Path:
    """configs/quickstart.yaml on a small world, writing under ``tmp`` (a few seconds per epoch)."""
    config = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())
    config["trainer"].update(default_root_dir=str(tmp / "runs"), enable_progress_bar=False, logger=False,
                             limit_train_batches=2, **trainer)
    for cb in config["trainer"]["callbacks"]:
        cb["init_args"]["dirpath"] = str(tmp / "runs/checkpoints")
    config["data"]["dataset_args"].update(num_users=150, num_items=100, min_ratings=30, max_ratings=60)
    path = tmp / "small.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
