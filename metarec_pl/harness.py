"""The benchmark harness: what every results script in ``benchmarks/`` shares.

A table is a folder of ``metarec fit`` configs, one per row, plus a ``table.yaml`` that lists the rows and what only
the table does with them (``Row``: the epoch that serves new items, evaluation-time knobs chosen on validation
users).  The harness builds a row's model and data module through the ``metarec`` command's own parser
(``metarec_pl.cli.build_cli``), so the table measures exactly what ``metarec fit --config <row>.yaml`` trains; then
it fits with validation after every epoch and keeps the epoch with the best validation score, chooses knobs on the
validation users, and tests.  Test users are never looked at before ``run_test``.

    table = harness.load_table("configs/benchmarks/melu")
    module, dm, config = harness.build(table.config("maml"), root="../shared/data/melu-ml-1m", seed=0)
    best_epoch, score, _ = harness.fit_best(module, dm, harness.max_epochs(config))
    metrics = harness.run_test(module, dm)
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

from metarec_pl.bilevel import MetaLearner
from metarec_pl.cli import build_cli, one_line
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.types import DataError
from metarec_pl.errors import ConfigError


@dataclass
class Row:
    """One row of a table: its ``metarec fit`` config (``<folder>/<name>.yaml``) and the table-only settings.

    ``cold_epoch``: the epoch (1-based) whose weights serve the new-item scenarios (``None``: the best epoch serves
    every scenario); ``select``: algorithm attribute -> grid, each set to the value with the lowest validation
    score; ``by_default``: run when no rows are named."""

    name: str
    config_path: Path
    cold_epoch: Optional[int] = None
    select: dict[str, list] = field(default_factory=dict)
    by_default: bool = True


@dataclass
class Table:
    """A folder of row configs and its ``table.yaml`` (``load_table``): the rows; the validation metric that picks
    each row's epoch (``monitor``, ``mode``: min or max); named ``scenarios``, each overrides merged into every
    row's config (empty: the rows as they are)."""

    folder: Path
    rows: dict[str, Row]
    monitor: str = "val/mae"
    mode: str = "min"
    scenarios: dict[str, dict] = field(default_factory=dict)

    def config(self, name: str) -> dict:
        """Row ``name``'s ``metarec fit`` config as a dict (``ConfigError`` for a row the table does not have)."""
        if name not in self.rows:
            raise ConfigError(f"{self.folder / 'table.yaml'}: no row {name!r}; expected one of: "
                              f"{', '.join(self.rows)}")
        return load_config(self.rows[name].config_path)


def load_config(path: Path | str) -> dict:
    """A YAML config file as a dict (``ConfigError`` when it is missing or not a mapping)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc}); expected a YAML file of `metarec fit` "
                          f"options") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: holds {type(config).__name__}; expected a mapping of `metarec fit` options")
    return config


def load_table(folder: Path | str) -> Table:
    """The table in ``folder``: ``table.yaml``'s ``rows`` (name -> ``Row`` settings), each with ``<name>.yaml``."""
    folder = Path(folder)
    spec = load_config(folder / "table.yaml")
    rows = {}
    for name, settings in (spec.get("rows") or {}).items():
        path = folder / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"{folder / 'table.yaml'}: row {name!r} has no config {path}; expected one "
                              f"`metarec fit` config per row")
        try:
            rows[name] = Row(name=name, config_path=path, **(settings or {}))
        except TypeError as exc:
            raise ConfigError(f"{folder / 'table.yaml'}: row {name!r}: {exc}; expected the keys cold_epoch, select, "
                              f"by_default") from exc
    return Table(folder=folder, rows=rows, monitor=spec.get("monitor", "val/mae"), mode=spec.get("mode", "min"),
                 scenarios={k: v or {} for k, v in (spec.get("scenarios") or {}).items()})


def merged(config: dict, overrides: dict) -> dict:
    """``config`` with ``overrides`` merged in, mapping by mapping (a copy; neither argument changes)."""
    out = copy.deepcopy(config)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build(config: dict, root: str, seed: int, overrides: Optional[dict] = None, where: str = "config"
          ) -> tuple[MetaLearner, MetaDataModule, dict]:
    """A fresh model and data module for ``config`` on the data in ``root``, seeded with ``seed`` (the data split's
    seed and ``seed_everything``), built by the ``metarec`` command's parser as ``metarec fit`` would; returns them
    and the config used (``overrides`` merged in).  A config the parser or the classes refuse raises
    ``ConfigError`` (``DataError`` for the data) in one line that starts with ``where`` (e.g. the config's path)."""
    used = merged(config, {**(overrides or {}), "seed_everything": seed})
    used = merged(used, {"data": {"root": str(root), "seed": seed}})
    said = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(said):
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")  # a dict, no argv
            cli = build_cli(used, run=False)
    except SystemExit:  # the parser's one line ("metarec: error: ...")
        line = one_line(said.getvalue()).removeprefix("metarec: error: ")
        raise ConfigError(f"{where}: {line or 'refused by the metarec parser'}") from None
    except (ConfigError, DataError) as exc:
        raise type(exc)(f"{where}: {exc}") from None
    finally:
        sys.stderr.write(said.getvalue() if "metarec: error:" not in said.getvalue() else "")
    return cli.model, cli.datamodule, used


def max_epochs(config: dict, scale: float = 1.0) -> int:
    """The config's ``trainer.max_epochs`` times ``scale`` (at least 1)."""
    return max(1, round(int(config.get("trainer", {}).get("max_epochs", 1)) * scale))


def setup(threads: int) -> None:
    """What every results script does first: W&B offline unless the user asked otherwise, Lightning's info lines
    off, and the CPU thread count of the measurement."""
    os.environ.setdefault("WANDB_MODE", "offline")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)  # "Seed set to ..."
    torch.set_num_threads(threads)


def wandb_logger(project: str, name: str, **kwargs: Any) -> WandbLogger:
    """A ``WandbLogger`` writing under runs/wandb (offline with ``WANDB_MODE=offline``)."""
    return WandbLogger(project=project, name=name, save_dir="runs/wandb", **kwargs)


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    """A CPU ``Trainer`` without logger, checkpoints, progress bar or model summary (evaluation, and the base of
    ``trainer``): nothing is written into the working folder."""
    return L.Trainer(**{**dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, enable_model_summary=False, inference_mode=False), **kwargs})


def trainer(epochs: int, callbacks: Sequence[L.Callback] = (), gradient_clip_val: Optional[float] = 1.0
            ) -> L.Trainer:
    """The tables' training settings; with ``callbacks``, validation runs after every epoch (they read it)."""
    checkpoints = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    return quiet_trainer(max_epochs=epochs, enable_checkpointing=checkpoints, callbacks=list(callbacks),
                         gradient_clip_val=gradient_clip_val, num_sanity_val_steps=0,
                         limit_val_batches=None if callbacks else 0)


class KeepEpoch(L.Callback):
    """Keeps a copy of the weights as they are at the end of epoch ``epoch`` (1-based)."""

    def __init__(self, epoch: Optional[int]) -> None:
        self.epoch, self.state = epoch, None

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 == self.epoch:
            self.state = copy.deepcopy(module.state_dict())


class ValidationCurves(L.Callback):
    """Records, after every epoch's validation, ``{"epoch", "time" (s since the fit began), <scenario>: MAE}`` for
    each of ``scenarios`` that was validated (``rows``); ``echo``: also print each row as JSON."""

    def __init__(self, scenarios: Sequence[str], echo: bool = False) -> None:
        self.scenarios, self.echo, self.rows, self.start = tuple(scenarios), echo, [], time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        self.rows.append({"epoch": trainer.current_epoch + 1, "time": round(time.perf_counter() - self.start, 1),
                          **{sc: round(float(m[f"val/{sc}/mae"]), 5) for sc in self.scenarios
                             if f"val/{sc}/mae" in m}})
        if self.echo:
            print(json.dumps(self.rows[-1]), flush=True)


def chosen(named: Optional[Sequence[str]], known: Sequence[str], what: str = "row") -> list[str]:
    """``named`` (default: every one of ``known``); ``ConfigError`` naming those ``known`` does not hold."""
    unknown = [n for n in named or [] if n not in known]
    if unknown:
        raise ConfigError(f"unknown {what}(s) {', '.join(unknown)}; expected some of: {', '.join(known)}")
    return list(named or known)


def fit_best(module: MetaLearner, dm: MetaDataModule, epochs: int, keep_epoch: Optional[int] = None,
             monitor: str = "val/mae", mode: str = "min", gradient_clip_val: Optional[float] = 1.0
             ) -> tuple[int, float, Optional[dict]]:
    """Fit for ``epochs`` epochs, validating after each; load the weights of the epoch with the best ``monitor``
    (Lightning's ``ModelCheckpoint``) and return that epoch (1-based), its score, and the weights at the end of
    ``keep_epoch`` (if given).  The validation users choose the epoch; no test user is looked at."""
    keep = KeepEpoch(keep_epoch)
    with tempfile.TemporaryDirectory() as tmp:
        best = ModelCheckpoint(dirpath=tmp, monitor=monitor, mode=mode, save_top_k=1, save_weights_only=True)
        trainer(epochs, [best, keep], gradient_clip_val).fit(module, dm)
        checkpoint = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
    module.load_state_dict(checkpoint["state_dict"])
    return checkpoint["epoch"] + 1, float(best.best_model_score), keep.state


def validate(module: MetaLearner, dm: MetaDataModule, monitor: str = "val/mae") -> float:
    """``monitor`` on the validation tasks."""
    return quiet_trainer().validate(module, dm, verbose=False)[0][monitor]


def run_select(module: MetaLearner, dm: MetaDataModule, select: dict[str, list]) -> dict:
    """Set each evaluation-time knob of the algorithm to the grid value with the lowest validation MAE
    (validation users only: test users are never looked at); return the choice."""
    best = None
    for values in itertools.product(*select.values()):
        for attr, v in zip(select, values):
            setattr(module.algorithm, attr, v)
        mae = validate(module, dm)
        if best is None or mae < best[0]:
            best = (mae, dict(zip(select, values)))
    chosen = best[1] if best else {}
    for attr, v in chosen.items():
        setattr(module.algorithm, attr, v)
    return chosen


def run_test(module: MetaLearner, dm: MetaDataModule, scenarios: Optional[Sequence[str]] = None) -> dict[str, float]:
    """Test metrics on ``scenarios`` (``None``: every test scenario)."""
    dm.test_scenarios = scenarios
    return quiet_trainer().test(module, dm, verbose=False)[0]


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (sample std) to 4 decimals; the mean alone for one value, ``–`` for none."""
    if not values:
        return "–"
    m = statistics.fmean(values)
    return f"{m:.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{m:.4f}"


def paired_gap(results: list[dict], method: str, baseline: str, key: str) -> str:
    """``method`` minus ``baseline`` in metric ``key``, paired by seed: mean ± std of the per-seed differences and
    on how many seeds ``method`` is lower (the seed-to-seed spread of each row is mostly shared, so this says more
    than comparing the two rows' means ± std)."""
    by_seed = lambda m: {r["seed"]: r["test"][key] for r in results if r["method"] == m}  # noqa: E731
    a, b = by_seed(method), by_seed(baseline)
    gaps = [a[s] - b[s] for s in sorted(a.keys() & b.keys())]
    if not gaps:
        return "–"
    spread = f" ± {statistics.stdev(gaps):.4f}" if len(gaps) > 1 else ""
    lower = sum(g < 0 for g in gaps)
    return f"{statistics.fmean(gaps):+.4f}{spread} vs {baseline} (lower on {lower}/{len(gaps)} seeds)"


def provenance(**extra: Any) -> dict:
    """What a results page says of its run: the command, when (UTC), the machine and torch, the load average."""
    return dict(command="python " + " ".join(sys.argv), when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                machine=f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
                load=" ".join(f"{x:.2f}" for x in os.getloadavg()), **extra)


def run_script(main: Callable[[], None], name: str) -> None:
    """Run a results script's ``main``: a user error (``ConfigError``, ``DataError``: a bad table, row or config)
    is one line on stderr, ``<name>: error: <what>``, and exit code 2."""
    try:
        main()
    except (ConfigError, DataError) as exc:
        print(f"{name}: error: {one_line(str(exc))}", file=sys.stderr)
        sys.exit(2)
