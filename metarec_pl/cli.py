"""The ``metarec`` command: LightningCLI (fit/validate/test/predict) plus ``metarec plugins``.

On top of LightningCLI:

* options given with ``--ckpt_path`` take effect or are refused in one line (``metarec_pl.ckpt_options``);
* every user-caused error (``USER_ERRORS``, jsonargparse's own parse errors, ``ValueError``s raised by our own
  validation while the classes are built) is one line on stderr, ``metarec: error: <what>, <where>, <expected>``,
  exit code 2, and whatever the failed run had created under its output folders is removed (``OutputGuard``);
  any other exception keeps its traceback (a bug must stay visible);
* ``fit`` refuses a checkpoint folder that already holds checkpoints, unless resuming (``--ckpt_path``) or
  ``--overwrite_checkpoints true``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import metarec_pl
from metarec_pl import plugins
from metarec_pl.bilevel import MetaLearner
from metarec_pl.ckpt_options import (SPECIAL_PATHS, check_fits, plain, read_checkpoint, resolve_data_options,
                                     resolve_model_options, saved_data_info)
from metarec_pl.data.info import LEGACY_FACTS, DataInfo
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.types import DataError, FeatureSpec
from metarec_pl.divergence import DivergenceError
from metarec_pl.entry import answered_plugins  # the same command as the light console script's
from metarec_pl.errors import CheckpointError, ConfigError, accepted_keywords, check_keywords
from metarec_pl.predict_io import RecommendationWriter
from metarec_pl.tracking import LoggedConfig, TaskThroughput, wandb_login_problem

USER_ERRORS = (ConfigError, CheckpointError, DataError, DivergenceError, plugins.UnknownPluginError,
               plugins.PluginConflictError, MisconfigurationException)
PACKAGE_DIR = Path(metarec_pl.__file__).resolve().parent
report_log = logging.getLogger("metarec_pl.data")  # WARNING lines show in `metarec` output by default (stderr)


def schema_as_dicts(schema: list[FeatureSpec]) -> list[dict]:
    """Plain dicts serialise into configs, hparams.yaml and checkpoints alike."""
    return [asdict(f) for f in schema]


def one_line(message: str) -> str:
    """A (possibly multi-line) message as one line."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def parse_error_line(message: str) -> str:
    """jsonargparse's error message (``Parser key "model.top_k": ...`` over several lines) as one line that names the
    option, the value given and the types expected."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "bad command line; expected the options of `metarec <subcommand> --help`"
    head = lines[0]
    if head.startswith('Parser key "') and '":' in head:
        key, rest = head[len('Parser key "'):].split('":', 1)
        given = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Given value:")), None)
        expected = [line[len("- Expected a "):].replace("<class '", "").replace("'>", "").replace("NoneType", "null")
                    for line in lines if line.startswith("- Expected a ")]
        if given is not None and expected:
            return f"option --{key}: {given!r} is not valid; expected {' or '.join(expected)}"
        detail = one_line(" ".join([rest, *lines[1:]]))
        return f"option --{key}: {detail.replace(chr(39) + '>', '').replace('<class ' + chr(39), '')}"
    return f"{one_line(message)} (expected the options listed by `metarec <subcommand> --help`)"


class MetaRecArgumentParser(LightningArgumentParser):
    """Parse errors as one line ``metarec: error: ...`` (exit code 2) instead of the full usage text; the model's
    deprecated one-by-one data facts (``LEGACY_FACTS``: ``schema``, ``rating_mean``, ...) are no options (the
    data module's ``info`` gives them, linked to ``model.data_info``, which therefore lists no help entry either)."""

    def add_lightning_class_args(self, lightning_class: Any, nested_key: str, subclass_mode: bool = False,
                                 required: bool = True) -> list[str]:
        if nested_key != "model" or subclass_mode:
            return super().add_lightning_class_args(lightning_class, nested_key, subclass_mode, required)
        added = self.add_class_arguments(lightning_class, nested_key, fail_untyped=False, instantiate=True,
                                         sub_configs=True, skip=set(LEGACY_FACTS))
        for action in self._actions:  # data_info is filled by the link from data.info: no help of its own to show
            if action.dest == "model.data_info.help":
                action.help = argparse.SUPPRESS
        return added

    def error(self, message: str, ex: Optional[Exception] = None):  # type: ignore[override]
        if not self.exit_on_error:  # jsonargparse trying alternatives internally
            return super().error(message, ex)
        print(f"metarec: error: {parse_error_line(message)}", file=sys.stderr)
        sys.exit(2)


class OutputGuard:
    """Removes what a failed run created under its output folders (log, checkpoint, config and output paths).

    ``watch(paths)`` records, before the run, which of them exist and what they hold; ``remove_created()`` removes
    the paths that appeared since (files and folders), never anything that was there before, and never walks the
    working folder itself or its parents.
    """

    def __init__(self) -> None:
        self.missing: set[Path] = set()  # top-most paths that did not exist (removed whole if they appear)
        self.trees: dict[Path, set[Path]] = {}  # existing folder -> every path under it before the run
        self.run_started = False  # set by ``watch``: the classes are built, the run begins

    def watch(self, paths: Iterable[Path]) -> None:
        self.run_started = True
        cwd = Path.cwd().resolve()
        for path in paths:
            path = Path(path).absolute()
            if not path.exists():
                top = path
                while not top.parent.exists() and top.parent != top:
                    top = top.parent
                self.missing.add(top)
            elif path.is_dir() and path.resolve() not in (cwd, *cwd.parents) and path not in self.trees:
                self.trees[path] = {p for p in path.rglob("*")}

    def remove_created(self) -> None:
        for top in self.missing:
            _remove(top)
        for root, before in self.trees.items():
            if not root.is_dir():
                continue
            for path in sorted(root.rglob("*"), key=lambda p: len(p.parts)):
                if path not in before and (path.exists() or path.is_symlink()):
                    _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        try:
            path.unlink()
        except OSError:
            pass


def _class_entries(value: Any) -> list[tuple[str, dict]]:
    """``(class_path, init_args)`` of a config entry that is a class, a list of them, or something else."""
    value = plain(value)
    items = value if isinstance(value, list) else [value]
    return [(str(v.get("class_path", "")), dict(v.get("init_args") or {})) for v in items if isinstance(v, dict)]


class MetaRecCLI(LightningCLI):
    def __init__(self, *args: Any, guard: Optional[OutputGuard] = None, **kwargs: Any) -> None:
        self.guard = guard if guard is not None else OutputGuard()
        self.checkpoint: Optional[dict] = None  # the --ckpt_path checkpoint, read once to check it
        self.checkpoint_path: Optional[str] = None
        self._argv: Optional[list[str]] = None
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # the data's facts (schema, rating scale, feedback kind, id maps), measured once by the data module
        parser.link_arguments("data.info", "model.data_info", apply_on="instantiate")
        # `metarec predict --data.predict_file new.csv --recommend.output recs.csv --recommend.top_k 10`
        parser.add_lightning_class_args(RecommendationWriter, "recommend")
        parser.add_argument("--overwrite_checkpoints", type=bool, default=False,
                            help="fit: write into checkpoint folders that already hold checkpoints (default: "
                                 "refuse, unless resuming with --ckpt_path)")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if args is None:
            self._argv = list(sys.argv[1:])
        elif isinstance(args, (list, tuple)):
            self._argv = [str(a) for a in args]
        super().parse_arguments(parser, args)

    # ----------------------------------------------------------------------------------- --ckpt_path options
    def _given(self, subcommand: str) -> dict:
        """The options given explicitly (command line and config files, no defaults) of ``subcommand``."""
        if self._argv is None:  # a dict/Namespace config: everything in it counts as given
            return plain(self.config[subcommand])
        return plain(self.parser.parse_args(self._argv, defaults=False).get(subcommand) or {})

    def _resolve_special(self, name: str, config: Any) -> Optional[str]:
        """``--ckpt_path last``: the newest ``*last*.ckpt`` of the configured checkpoint folders (None: none)."""
        if name != "last":
            return None
        found = []
        for class_path, init_args in _class_entries(config.get("trainer", {}).get("callbacks")):
            if class_path.endswith("ModelCheckpoint") and init_args.get("dirpath"):
                found += [p for p in Path(init_args["dirpath"]).glob("*.ckpt") if "last" in p.name]
        return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None

    def _parse_ckpt_path(self) -> None:
        """Replaces LightningCLI's (which overwrote given options by the checkpoint's): see ``ckpt_options``."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path:
            return
        ckpt_path = str(ckpt_path)
        if ckpt_path in SPECIAL_PATHS and not Path(ckpt_path).exists():
            resolved = self._resolve_special(ckpt_path, config)
            if resolved is None:
                if subcommand == "fit":
                    return  # Lightning: `last` with nothing saved yet trains from scratch
                why = ("no *last*.ckpt in the configured ModelCheckpoint dirpath" if ckpt_path == "last" else
                       f"'{ckpt_path}' means a checkpoint of a fit in this same process")
                raise ConfigError(f"ckpt_path: '{ckpt_path}' names no checkpoint file here ({why}); expected the "
                                  f"path of a .ckpt file")
            config["ckpt_path"] = ckpt_path = resolved
        self.checkpoint, self.checkpoint_path = read_checkpoint(ckpt_path), ckpt_path
        given = self._given(subcommand)
        update = {}
        model = resolve_model_options(self.checkpoint.get("hyper_parameters") or {}, given.get("model") or {},
                                      ckpt_path, accepted=accepted_keywords(self._model_class))
        data = resolve_data_options(self.checkpoint.get("datamodule_hyper_parameters"), given.get("data") or {},
                                    accepted=accepted_keywords(self._datamodule_class))
        if model:
            update["model"] = model
        if data:
            update["data"] = data
        if update:
            self.config = self.parser.parse_object({subcommand: update}, self.config)

    def instantiate_trainer(self, **kwargs: Any):
        """Lightning's own validation of the trainer options (``ValueError``/``MisconfigurationException`` from
        ``Trainer(...)``: a strategy, accelerator or precision that does not exist here, or whose package is not
        installed) as a ``ConfigError``."""
        try:
            return super().instantiate_trainer(**kwargs)
        except (ValueError, ImportError, MisconfigurationException) as exc:
            raise ConfigError(f"trainer: {one_line(str(exc))}; expected trainer options that this machine and "
                              f"Lightning support (metarec {self.subcommand} --help lists them)") from exc

    # ------------------------------------------------------------------------------------- checks before building
    def before_instantiate_classes(self) -> None:
        """Checks that need no class built: W&B login, keyword dicts of the data plugins, batch sizes."""
        config = self.config.get(str(self.subcommand), self.config)
        for class_path, init_args in _class_entries(config.get("trainer", {}).get("logger")):
            if class_path.endswith("WandbLogger"):
                problem = wandb_login_problem(init_args, os.environ)
                if problem:
                    raise ConfigError(problem)
        data = config.get("data")
        if data is None:
            return
        check_keywords(plugins.get_dataset(data.dataset), plain(data.get("dataset_args")), "data.dataset_args",
                       f"data set '{data.dataset}'", reserved={"root": "data.root"}, follow_bases=False)
        check_keywords(plugins.get_task_sampler(data.sampler), plain(data.get("sampler_args")), "data.sampler_args",
                       f"sampler '{data.sampler}'", follow_bases=False)
        for key, low in (("tasks_per_batch", 1), ("eval_tasks_per_batch", 1), ("num_workers", 0)):
            value = data.get(key)
            if value is not None and value < low:
                raise ConfigError(f"data.{key}: {value}; expected a whole number >= {low}")

    def after_instantiate_classes(self) -> None:
        """The saved config.yaml names the distribution behind each plugin of the run (``metarec_pl.provenance``);
        the checkpoint must fit the model and data; a fit must not overwrite another run's checkpoints; then the
        output folders are watched, so that a run failing with a user error leaves nothing behind."""
        super().after_instantiate_classes()
        config = self.config.get(str(self.subcommand), self.config)
        config.model.plugin_distributions = dict(self.model.hparams.plugin_distributions)
        if self.checkpoint is not None:
            saved = saved_data_info(self.checkpoint.get("hyper_parameters") or {})
            check_fits(self.checkpoint["state_dict"], None if saved is None else saved.get("schema"),
                       self.model.state_dict(), self.model.hparams.data_info["schema"], str(self.checkpoint_path))
            # other ids are said, not refused: a model without id fields or per-id tables is unaffected
            changed = None if saved is None else DataInfo.coerce(saved).changed_ids_line(self.model.data_info,
                                                                                         str(self.checkpoint_path))
            if changed:
                report_log.warning("%s", changed)
        if self.subcommand == "fit" and not config.get("ckpt_path") and not config.get("overwrite_checkpoints"):
            self._refuse_used_checkpoint_folders()
        self.guard.watch(self._output_paths(config))

    def _checkpoint_folders(self) -> list[Path]:
        trainer = self.trainer
        out = []
        for cb in trainer.checkpoint_callbacks:
            dirpath = getattr(cb, "dirpath", None)
            if dirpath is None and not trainer.loggers:  # Lightning's default without a logger (not versioned)
                dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
            if dirpath is not None:
                out.append(Path(dirpath))
        return out

    def _refuse_used_checkpoint_folders(self) -> None:
        for folder in self._checkpoint_folders():
            held = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
            if held:
                shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
                raise ConfigError(f"checkpoint folder {folder} already holds checkpoints of another run ({shown}); "
                                  f"expected a new or empty folder: resume with --ckpt_path last, replace them with "
                                  f"--overwrite_checkpoints true, or set another ModelCheckpoint dirpath")

    def _output_paths(self, config: Any) -> list[Path]:
        trainer = self.trainer
        root = Path(trainer.default_root_dir)
        paths = [root, root / "config.yaml", root / "lightning_logs", *self._checkpoint_folders()]
        for logger in trainer.loggers:
            folder = getattr(logger, "root_dir", None) or getattr(logger, "save_dir", None)
            if folder:
                paths.append(Path(folder))
        output = (config.get("recommend") or {}).get("output")
        paths.append(Path(output) if output else root / "recommendations.csv")
        return paths


def _raised_by_our_validation(exc: BaseException) -> bool:
    """A ``ValueError`` raised by a ``raise`` statement of this package (a validation), not deep in a library."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not isinstance(exc, ValueError) or not frames:
        return False
    last = frames[-1]
    try:
        ours = Path(last.filename).resolve().is_relative_to(PACKAGE_DIR)
    except OSError:
        return False
    return ours and (last.line or "").lstrip().startswith("raise ")


def fail(message: str) -> None:
    """Print ``metarec: error: <message>`` (one line) on stderr and exit with code 2."""
    print(f"metarec: error: {one_line(message)}", file=sys.stderr)
    sys.exit(2)


def print_plugins(out=sys.stdout) -> None:
    """The ``metarec plugins`` table (``metarec_pl.plugins.print_table``; the console script answers it without
    importing this module, see ``metarec_pl.entry``)."""
    plugins.print_table(out)


def build_cli(args: Any = None, run: bool = True, guard: Optional[OutputGuard] = None) -> MetaRecCLI:
    """The ``metarec`` LightningCLI: ``args`` a command line (``None``: ``sys.argv``) or, with ``run=False``, a
    config dict without subcommand (what ``metarec_pl.harness`` builds a benchmark row from: the same parser, links
    and checks as ``metarec fit``).  User errors raise (``USER_ERRORS``); ``main`` turns them into one line."""
    return MetaRecCLI(MetaLearner, MetaDataModule, args=args, run=run, auto_configure_optimizers=False,
                      parser_class=MetaRecArgumentParser, guard=guard,
                      trainer_defaults={"inference_mode": False, "callbacks": [TaskThroughput()],
                                        # the task batch sampler splits batches across ranks itself (DDP)
                                        "use_distributed_sampler": False},
                      save_config_callback=LoggedConfig, save_config_kwargs={"overwrite": True})


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if answered_plugins(args):
        return
    guard = OutputGuard()
    try:
        build_cli(None if argv is None else args, guard=guard)
    except USER_ERRORS as exc:
        guard.remove_created()
        prefix = "lightning: " if isinstance(exc, MisconfigurationException) else ""
        fail(prefix + (str(exc) or type(exc).__name__))
    except ValueError as exc:
        if guard.run_started or not _raised_by_our_validation(exc):  # a bug keeps its traceback
            raise
        guard.remove_created()
        fail(str(exc))


if __name__ == "__main__":
    main()
