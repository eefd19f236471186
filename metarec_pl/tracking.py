"""Experiment tracking through Lightning's loggers (W&B, CSV, TensorBoard): what every run records.

* ``LoggedConfig`` (the CLI's save-config callback): besides ``config.yaml`` in the log folder, sends the
  resolved config and the version of every registered plugin to each logger (W&B: the run's config).
* ``TaskThroughput``: tasks/s of meta-training in the progress bar (each bar tick is one meta-step) and logs.
* ``log_table`` / ``log_line_plot``: results tables and curves (e.g. MAE vs K) — a ``wandb.Table`` /
  ``wandb.plot.line_series`` on W&B, a CSV file in the log folder for the other loggers.

W&B offline (``WANDB_MODE=offline`` or ``offline: true``) needs no network and no account; ``log_model: true``
uploads the checkpoints (best included) as artifacts when online.  See ``configs/quickstart_wandb.yaml``.
"""

from __future__ import annotations

import csv
import importlib.metadata
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import Logger, WandbLogger

from metarec_pl import plugins

Loggers = Union[Logger, Iterable[Logger], L.Trainer]


def plugin_versions() -> dict[str, str]:
    """``{"algorithm/maml": "metarec_pl 0.1.0", ...}`` for every registered plugin."""
    out = {}
    for r in plugins.registrations():
        try:
            version = importlib.metadata.version(r.distribution)
        except (importlib.metadata.PackageNotFoundError, ValueError):
            version = "?"
        out[f"{r.kind}/{r.name}"] = f"{r.distribution} {version}"
    return out


class LoggedConfig(SaveConfigCallback):
    """Writes ``config.yaml`` as usual, and logs the resolved config and plugin versions to every logger."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))  # plain data, as in config.yaml
        params = {"config": config, "plugins": plugin_versions()}
        for logger in trainer.loggers:
            logger.log_hyperparams(params)


class TaskThroughput(L.Callback):
    """Logs ``train/tasks_per_s`` (tasks of the meta-batch / wall time of its step) to the progress bar and loggers."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        tasks = len(batch) if hasattr(batch, "__len__") else 1
        rate = tasks / max(time.perf_counter() - self._start, 1e-9)
        pl_module.log("train/tasks_per_s", rate, prog_bar=True, on_step=True, on_epoch=False, batch_size=tasks)


def _loggers(target: Loggers) -> list[Logger]:
    if isinstance(target, L.Trainer):
        return list(target.loggers)
    return [target] if isinstance(target, Logger) else list(target)


def _csv(logger: Logger, key: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    folder = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
    if folder is None:
        return
    path = Path(folder) / f"{key.replace('/', '_')}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


def log_table(target: Loggers, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A results table: ``wandb.Table`` on W&B loggers, ``<log_dir>/<key>.csv`` on the others."""
    for logger in _loggers(target):
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=list(columns), data=[list(r) for r in rows])
        else:
            _csv(logger, key, columns, rows)


def log_line_plot(target: Loggers, key: str, xs: Sequence[float], series: Mapping[str, Sequence[float]],
                  xname: str = "x", title: str = "") -> None:
    """Curves sharing an x axis (e.g. MAE vs K per algorithm): a W&B line plot, or a CSV (x, one column per series)."""
    for logger in _loggers(target):
        if isinstance(logger, WandbLogger):
            import wandb

            plot = wandb.plot.line_series(xs=list(xs), ys=[list(v) for v in series.values()], keys=list(series),
                                          title=title or key, xname=xname)
            logger.experiment.log({key: plot})
        else:
            _csv(logger, key, [xname, *series], zip(xs, *series.values()))


OFFLINE_MODES = ("offline", "dryrun", "disabled")


def _wandb_settings_mode(environ: Mapping[str, str]) -> Optional[str]:
    """``mode`` from W&B's settings files (``wandb offline`` writes it), or None."""
    import configparser

    config_dir = environ.get("WANDB_CONFIG_DIR") or str(Path(environ.get("HOME", "~")).expanduser() / ".config"
                                                        / "wandb")
    for path in (Path(config_dir) / "settings", Path(environ.get("WANDB_DIR", ".")) / "wandb" / "settings"):
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except (configparser.Error, OSError):
            continue
        if parser.has_option("default", "mode"):
            return parser.get("default", "mode")
    return None


def _has_wandb_credentials(environ: Mapping[str, str]) -> bool:
    """An API key in the environment, an identity-token file, or a netrc entry for the W&B host."""
    import netrc
    from urllib.parse import urlsplit

    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc or "api.wandb.ai"
    home = Path(environ.get("HOME", "~")).expanduser()
    paths = [environ["NETRC"]] if environ.get("NETRC") else [home / ".netrc", home / "_netrc"]
    for path in paths:
        try:
            if netrc.netrc(str(path)).authenticators(host.split(":")[0]):
                return True
        except (FileNotFoundError, netrc.NetrcParseError, OSError):
            continue
    return False


def wandb_login_problem(logger_options: Mapping[str, Any], environ: Mapping[str, str]) -> Optional[str]:
    """Why a ``WandbLogger`` with ``logger_options`` (its ``init_args``) would need a login it cannot get, or None.

    Online (no ``offline: true``, no offline ``mode``, ``WANDB_MODE`` not offline/disabled, no ``wandb offline``
    setting) without an API key (``WANDB_API_KEY``, a netrc entry from ``wandb login``) W&B would prompt or fail
    deep inside the run; this says so before anything starts.  Reads only the environment and files.
    """
    if logger_options.get("offline") or str(logger_options.get("mode", "")) in OFFLINE_MODES:
        return None
    mode = environ.get("WANDB_MODE") or _wandb_settings_mode(environ)
    if (mode or "").lower() in OFFLINE_MODES or environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
        return None
    if _has_wandb_credentials(environ):
        return None
    return ("trainer.logger: WandbLogger is online but W&B has no login here (no WANDB_API_KEY, no netrc entry); "
            "expected a login first (run: wandb login), or WANDB_MODE=offline (or init_args offline: true) to log "
            "offline")
