"""Every command shown in docs/*.md and README.md runs: the shell commands of each ```bash block are executed in
order, per file, in a scratch folder that sees the repo's configs, benchmarks, scripts and .venv.

Conventions (docs/cli.md, "Commands in the docs"): a command marked ``# slow`` (minutes of work) or ``# manual``
(needs something the reader makes first, or an account) is not run here; install steps (``pip install``,
``bash scripts/bootstrap.sh``) are what CI's ``.ci/run`` does before the tests; a command that reads
``../shared/data`` is skipped when that folder is missing; ``RUN_ELSEWHERE`` names docs whose commands a dedicated
test runs.  Indented blocks and other fences are output, not run.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LINKED = ("configs", "benchmarks", "scripts", "docs", "metarec_pl", "plugins", "tests", ".venv")
NOT_HERE = re.compile(r"#\s*(slow|manual)\b")
INSTALL = re.compile(r"(^|\s)(pip install|bash scripts/bootstrap\.sh)")
TIMEOUT_S = 300
# docs whose commands a dedicated test runs (with the files the tutorial creates first)
RUN_ELSEWHERE = {"plugins.md": "tests/test_plugin_docs.py"}


def commands(markdown: str) -> list[str]:
    """The commands of the ```bash blocks, continuation lines joined; comment-only lines dropped."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M):
        for command in re.sub(r"\s*\\\n\s*", " ", block).splitlines():
            if command.strip() and not command.strip().startswith("#"):
                out.append(command.strip())
    return out


def runnable(command: str) -> bool:
    if NOT_HERE.search(command) or INSTALL.search(command):
        return False
    return "../shared/data" not in command or (SHARED / "data").is_dir()


DOCS = sorted(ROOT.glob("docs/*.md")) + [ROOT / "README.md"]


def test_the_docs_show_commands():
    assert commands("```bash\nmetarec fit \\\n  --config a.yaml  # slow\n# note\n```\n") == [
        "metarec fit --config a.yaml  # slow"]
    assert not runnable("metarec fit --config a.yaml  # slow") and runnable("metarec plugins")
    assert any(commands(doc.read_text()) for doc in DOCS)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_commands_run(doc, tmp_path):
    if doc.name in RUN_ELSEWHERE:
        pytest.skip(f"{doc.name}: its commands run in {RUN_ELSEWHERE[doc.name]}")
    todo = [c for c in commands(doc.read_text()) if runnable(c)]
    if not todo:
        pytest.skip(f"{doc.name}: no command to run here")
    for name in LINKED:
        if (ROOT / name).exists():
            (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{ROOT / '.venv/bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    for command in todo:
        shell = command.replace("../shared/", f"{SHARED}/")
        out = subprocess.run(["bash", "-c", f"set -o pipefail; {shell}"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=TIMEOUT_S)
        assert out.returncode == 0, (f"{doc.name}: `{command}` failed ({out.returncode}); mark it '# slow' or "
                                     f"'# manual' if it cannot run in a test:\n{out.stdout[-1500:]}\n{out.stderr[-2500:]}")
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
