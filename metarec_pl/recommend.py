"""Recommend for a brand-new user: adapt a trained meta-learner to their few ratings, rank the catalogue.

A new user is a task like any other: their (item, rating) pairs are the support set and the catalogue items
they have not rated are the query set, so adaptation is exactly the inner loop of training and evaluation
(``MetaLearner.adapt``, vectorised over users).  Item features, the rating scale and the catalogue come from
the data set the model was trained on: ``Recommender.from_checkpoint`` rebuilds it from the data-module
hyper-parameters stored in the checkpoint (or takes a data module / ``RatingData`` / config file you give).

Ids are the *raw* ids of the data set's files (``RatingData.raw_ids``: the strings of an ``interactions`` log,
MovieLens' official ids): items and candidates are given as strings (surrounding spaces removed) or integers
(meaning their decimal string, so ``12`` and ``"12"`` are the same item); ``None``, floats or other types are a
one-line ``DataError``, as is an id the data set does not have.  Recommendations come back as ``(raw id: str,
score)`` pairs.  The catalogue is every item that has at least one rating in the data set.  Profile values are
feature ids of the data set's user fields; a field not given takes the value most common among the training
users (dense fields: their mean; multi-valued: none; a user id field: 0, the unknown id).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import yaml
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor

from metarec_pl.bilevel import MetaLearner
from metarec_pl.catalogue import Catalogue, NewUser, Ratings, top_k  # noqa: F401  (re-exported)
from metarec_pl.data.info import DataInfo
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.types import DataError, RatingData, TaskBatch

report_log = logging.getLogger("metarec_pl.data")  # WARNING lines show in `metarec` output by default (stderr)


class Recommender:
    """A trained ``MetaLearner`` + the ``Catalogue`` of its data set.

    ``recommend(ratings, profile=None, k=10)`` -> ``[(item, score), ...]`` best first, rated items excluded;
    ``recommend_many(users, k)`` does the same for many ``NewUser``s at once (vectorised, ``batch_size`` users
    per adaptation); ``score(ratings, items)`` -> the adapted predicted ratings of the given items.
    """

    def __init__(self, module: Any, data: RatingData, batch_size: int = 64) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"recommender: batch_size {batch_size!r}; expected an integer >= 1")
        if list(module.data_info.schema) != list(data.schema):
            raise DataError("recommender: the data's feature schema differs from the one the model was trained on; "
                            "expected the same data set and options as in training")
        changed = module.data_info.changed_ids_line(DataInfo.ids_of(data), "the recommender's model")
        if changed:  # said, not refused: a model without id fields or per-id tables is unaffected
            report_log.warning("%s", changed)
        self.module = module.eval()
        self.catalogue = Catalogue(data)
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, checkpoint: Union[str, Path], data: Any = None, map_location: Any = "cpu",
                        **kwargs: Any) -> "Recommender":
        """Load ``checkpoint``; ``data`` is a ``MetaDataModule``, a ``RatingData``, a config file with a ``data:``
        section, or ``None``: the data module recorded in the checkpoint (same data set, root and options)."""
        if not isinstance(checkpoint, (str, Path)):
            raise DataError(f"recommender: checkpoint {checkpoint!r} is not a path; expected a .ckpt file path")
        path = Path(checkpoint)
        ckpt = read_checkpoint(path)
        try:
            module = MetaLearner.load_from_checkpoint(path, map_location=map_location)
        except Exception as exc:  # hyper-parameters or weights that do not make a MetaLearner
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise DataError(f"recommender: checkpoint {str(path)!r} does not load into a MetaLearner "
                            f"({type(exc).__name__}: {first}); expected a checkpoint written by metarec fit") from None
        if data is None:
            saved = ckpt.get("datamodule_hyper_parameters")
            if saved is None:
                raise DataError(f"recommender: {path} records no data module; pass data= (a MetaDataModule, "
                                "RatingData or config file)")
            data = _datamodule(dict(saved), f"the data module recorded in {path}")
        elif isinstance(data, (str, Path)):
            source = Path(data)
            if not source.is_file():
                raise DataError(f"recommender: config {str(source)!r} does not exist; expected a metarec config file")
            try:
                config = yaml.safe_load(source.read_text()) or {}
            except yaml.YAMLError as exc:
                raise DataError(f"recommender: {source}: not valid YAML ({str(exc).splitlines()[0]})") from None
            config = config.get("fit", config) if isinstance(config, dict) else config
            if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
                raise DataError(f"recommender: {data} has no 'data:' section; expected a metarec config file")
            data = _datamodule(config["data"], f"{source}: data")
        if isinstance(data, MetaDataModule):
            data = data.data
        if not isinstance(data, RatingData):
            raise DataError(f"recommender: data={type(data).__name__}; expected a MetaDataModule, RatingData, a "
                            "config file or None")
        return cls(module, data, **kwargs)

    def _predict(self, batch: TaskBatch) -> Tensor:
        device = self.module.device
        batch = batch if device.type == "cpu" else _to(batch, device)
        return self.module.adapted_predictions(batch).float().cpu()

    def recommend_many(self, users: Sequence[NewUser], k: int = 10,
                       candidates: Optional[Sequence[Union[str, int]]] = None) -> list[list[tuple[str, float]]]:
        """Top-``k`` (raw item id, score) per user among ``candidates`` (raw ids; default: the catalogue), rated
        items excluded, best first."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise DataError(f"recommender: k={k!r}; expected an integer >= 1")
        if isinstance(users, (NewUser, str, Mapping)) or not isinstance(users, Sequence):
            raise DataError(f"recommender: users={type(users).__name__}; expected a list of NewUser")
        for i, u in enumerate(users):
            if not isinstance(u, NewUser):
                raise DataError(f"recommender: users[{i}] is a {type(u).__name__}; expected a NewUser")
        cand = None if candidates is None else self.catalogue.check_items(candidates, "candidates")
        if cand is not None and len(cand) == 0:
            raise DataError("recommender: candidates is empty; expected at least one raw item id")
        out: list[list[tuple[str, float]]] = []
        for start in range(0, len(users), self.batch_size):
            batch = self.catalogue.batch(users[start:start + self.batch_size], cand, offset=start)
            out += [[(self.catalogue.raw_item(i), s) for i, s in recs]
                    for recs in top_k(self._predict(batch), batch.query.item, batch.query.mask, k)]
        return out

    def recommend(self, ratings: Ratings, profile: Optional[Mapping[str, Any]] = None, k: int = 10,
                  candidates: Optional[Sequence[Union[str, int]]] = None) -> list[tuple[str, float]]:
        """Top-``k`` (raw item id, score) for one new user with ``ratings`` (raw item id -> rating)."""
        return self.recommend_many([NewUser(ratings, profile)], k, candidates)[0]

    def score(self, ratings: Ratings, items: Sequence[Union[str, int]],
              profile: Optional[Mapping[str, Any]] = None) -> Tensor:
        """Adapted predicted ratings [len(items)] of ``items`` (raw ids, rated or not) for one new user."""
        cand = self.catalogue.check_items(items, "items to score")
        if len(cand) == 0:
            raise DataError("recommender: items to score is empty; expected at least one raw item id")
        return self._predict(self.catalogue.batch([NewUser(ratings, profile)], cand, exclude_rated=False))[0]


def read_checkpoint(path: Path) -> dict:
    """The checkpoint dictionary at ``path``; one-line ``DataError`` for a missing file, a folder, a truncated or
    foreign file, or one without a model's ``state_dict`` and ``hyper_parameters``."""
    expected = "expected a .ckpt file written by metarec fit (e.g. checkpoints/last.ckpt)"
    if path.is_dir():
        raise DataError(f"recommender: checkpoint {str(path)!r} is a folder; {expected}")
    if not path.is_file():
        raise DataError(f"recommender: checkpoint {str(path)!r} does not exist; {expected}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # zip/pickle/EOF errors of every kind: truncated or not a checkpoint
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise DataError(f"recommender: checkpoint {str(path)!r} is not a readable checkpoint ({type(exc).__name__}"
                        f"{': ' + first if first else ''}); {expected}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise DataError(f"recommender: checkpoint {str(path)!r} holds no model weights and hyper-parameters; {expected}")
    return ckpt


def _datamodule(options: dict, where: str) -> Any:
    """A ``MetaDataModule`` from saved or configured options.  Private keys (LightningCLI's ``_instantiator``,
    ``_class_path``) are not data options and are left out; a wrong option is a one-line ``DataError``."""
    options = {k: v for k, v in options.items() if not str(k).startswith("_")}
    try:
        return MetaDataModule(**options)
    except TypeError as exc:
        raise DataError(f"recommender: {where}: {str(exc).splitlines()[0]}; expected MetaDataModule options") from None


def _to(batch: TaskBatch, device: torch.device) -> TaskBatch:
    return apply_to_collection(batch, Tensor, lambda t: t.to(device))
