"""The ``metarec`` command: LightningCLI (fit/validate/test/predict) plus ``metarec plugins``."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Optional, Sequence

from lightning.pytorch.cli import LightningCLI

from metarec_pl import plugins
from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.types import DataError, FeatureSpec
from metarec_pl.divergence import DivergenceError
from metarec_pl.predict_io import RecommendationWriter
from metarec_pl.tracking import LoggedConfig, TaskThroughput

ONE_LINE_ERRORS = (plugins.UnknownPluginError, plugins.PluginConflictError, DataError, DivergenceError)


def schema_as_dicts(schema: list[FeatureSpec]) -> list[dict]:
    """Plain dicts serialise into configs, hparams.yaml and checkpoints alike."""
    return [asdict(f) for f in schema]


class MetaRecCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.schema", "model.schema", apply_on="instantiate", compute_fn=schema_as_dicts)
        parser.link_arguments("data.rating_mean", "model.rating_mean", apply_on="instantiate")
        parser.link_arguments("data.rating_levels", "model.rating_levels", apply_on="instantiate")
        parser.link_arguments("data.num_users", "model.num_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.num_items", apply_on="instantiate")
        # `metarec predict --data.predict_file new.csv --recommend.output recs.csv --recommend.top_k 10`
        parser.add_lightning_class_args(RecommendationWriter, "recommend")

    def after_instantiate_classes(self) -> None:
        """The saved config.yaml names the distribution behind each plugin of the run (``metarec_pl.provenance``)."""
        super().after_instantiate_classes()
        config = self.config.get(str(self.subcommand), self.config)
        config.model.plugin_distributions = dict(self.model.hparams.plugin_distributions)


def print_plugins(out=sys.stdout) -> None:
    """The ``metarec plugins`` table (``metarec_pl.plugins.print_table``; the console script answers it without
    importing this module, see ``metarec_pl.entry``)."""
    plugins.print_table(out)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["plugins"]:
        from metarec_pl.entry import plugins_command  # the same command as the light console script's

        code = plugins_command(args[1:])
        if code:
            sys.exit(code)
        return
    try:
        MetaRecCLI(MetaLearner, MetaDataModule, args=None if argv is None else args, auto_configure_optimizers=False,
                   trainer_defaults={"inference_mode": False, "callbacks": [TaskThroughput()],
                                     # the task batch sampler splits batches across ranks itself (DDP)
                                     "use_distributed_sampler": False},
                   save_config_callback=LoggedConfig, save_config_kwargs={"overwrite": True})
    except ONE_LINE_ERRORS as exc:
        print(f"metarec: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
