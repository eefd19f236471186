"""Start-up: ``metarec plugins`` imports neither torch nor Lightning, W&B or ``datasets``; the console script is the
light entry module; benchmarks/startup.py writes its table into docs/cli.md.  No timings are asserted here (they
depend on the machine): benchmarks/startup.py measures them."""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _scripts import load_script
from metarec_pl import entry

ROOT = Path(__file__).resolve().parents[1]
startup = load_script("startup")

HEAVY = ("torch", "lightning", "pytorch_lightning", "lightning_fabric", "wandb", "datasets", "transformers",
         "sentence_transformers", "numpy", "pandas", "pyarrow")


def imported(code: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``code`` in a fresh ``python -c``: its output and every module in ``sys.modules`` when it ended (also
    those imported through ``importlib``, which ``-X importtime`` does not show)."""
    dump = "; import sys; print('MODULES', *sorted(sys.modules), file=sys.stderr)"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code + dump], capture_output=True, text=True, env=env, timeout=120,
                         cwd=ROOT)
    (line,) = [line for line in out.stderr.splitlines() if line.startswith("MODULES ")] or [""]
    return out, set(line.split()[1:])


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_metarec_plugins_imports_no_torch_lightning_wandb_or_datasets():
    # what the console script does: `from metarec_pl.entry import main; sys.exit(main())` with argv ["plugins"]
    out, modules = imported("import sys; sys.argv = ['metarec', 'plugins']; from metarec_pl.entry import main; main()")
    assert out.returncode == 0, out.stderr[-2000:]
    assert {"pluggy", "metarec_pl.plugins", "metarec_pl.builtin.algorithms"} <= modules  # it did list something
    assert heavy(modules) == []
    rows = {tuple(line.split()[:3]) for line in out.stdout.splitlines()}
    assert {("algorithm", "maml", "metarec_pl"), ("dataset", "interactions", "metarec_pl")} <= rows
    if any(ep.name == "tanp" for ep in importlib.metadata.entry_points(group="metarec_pl")):
        assert ("algorithm", "tanp", "metarec-tanp") in rows  # a lazy third-party plugin is listed, not imported


def test_importing_metarec_pl_and_listing_imports_nothing_heavy():
    """A plugin's hook module does ``import metarec_pl``: that must stay light; the public classes come on use."""
    code = "import metarec_pl; names = [r.name for r in metarec_pl.registrations()]; assert 'maml' in names"
    out, modules = imported(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert heavy(modules) == []
    out, modules = imported("import metarec_pl; metarec_pl.get_algorithm('maml')")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch" in modules and "metarec_pl.algorithms.maml" in modules  # resolved on first use


def test_the_console_script_is_the_light_entry_module():
    (script,) = [ep for ep in importlib.metadata.entry_points(group="console_scripts") if ep.name == "metarec"]
    assert script.value == "metarec_pl.entry:main"
    assert 'metarec = "metarec_pl.entry:main"' in (ROOT / "pyproject.toml").read_text()


def test_entry_hands_every_other_command_to_the_lightning_cli(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["metarec", "fit", "--help"])  # as the console script is called
    with pytest.raises(SystemExit) as done:
        entry.main()
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--model.algorithm" in out and "--trainer" in out
    # the data's facts reach the model by the link from data.info, not as an option with a help of its own
    assert "data.info --> model.data_info" in out and "--model.data_info.help" not in out


def test_plugins_help_and_bad_argument(capsys):
    assert entry.plugins_command(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: metarec plugins [--check]\n")
    with pytest.raises(SystemExit) as done:
        entry.main(["plugins", "extra"])
    assert done.value.code == 2
    assert capsys.readouterr().err.startswith("metarec: error: unknown argument 'extra' for 'metarec plugins'")


# ---- benchmarks/startup.py ------------------------------------------------------------------------------------

def test_render_gives_medians_and_verdicts():
    times = {'python -c "import lightning"': [7.0, 6.0, 8.0], "metarec plugins": [0.3, 0.2, 2.5],
             "metarec fit --help": [7.5, 9.0, 6.5]}
    body = startup.render(times, "2 cores", (1.0, 0.5, 0.25), "2024-01-01")
    assert "| `metarec plugins` | **0.30 s** | 0.20 s | 2.50 s |" in body
    assert "| `metarec fit --help` | **7.50 s** | 6.50 s | 9.00 s |" in body
    assert "- `metarec plugins` ≤ 2 s: met (0.30 s)" in body
    assert "- `metarec fit --help` ≤ `import lightning` + 1 s: met (7.50 s against 8.00 s)" in body
    slow = startup.render({**times, "metarec fit --help": [8.5, 8.5, 8.5]}, "2 cores", (1, 1, 1), "2024-01-01")
    assert "NOT met (8.50 s against 8.00 s)" in slow


def test_replace_section_rewrites_only_between_the_markers():
    text = f"# Doc\n\nbefore\n{startup.BEGIN}\nold table\n{startup.END}\nafter\n"
    new = startup.replace_section(text, "new table")
    assert new == f"# Doc\n\nbefore\n{startup.BEGIN}\nnew table\n{startup.END}\nafter\n"
    with pytest.raises(ValueError, match="no '<!-- startup:begin"):
        startup.replace_section("# no markers\n", "x")
    assert startup.BEGIN in (ROOT / "docs/cli.md").read_text()  # the real doc has the section


def test_script_measures_and_writes_the_doc(tmp_path, capsys):
    doc = tmp_path / "cli.md"
    doc.write_text(f"intro\n{startup.BEGIN}\n{startup.END}\nrest\n")
    times = startup.main(["--runs", "1", "--only", "metarec plugins", "--doc", str(doc)])
    assert list(times) == ["metarec plugins"] and len(times["metarec plugins"]) == 1
    written = doc.read_text()
    assert written.startswith("intro\n") and written.endswith(f"{startup.END}\nrest\n")
    assert "| `metarec plugins` | **" in written and "`metarec plugins` ≤ 2 s: " in written
