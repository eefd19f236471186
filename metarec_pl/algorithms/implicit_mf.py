"""Implicit-feedback matrix factorisation from the ``implicit`` package, as fold-in baselines for new users.

* ``implicit-als``: ``implicit.als.AlternatingLeastSquares`` (Hu, Koren & Volinsky, "Collaborative Filtering for
  Implicit Feedback Datasets", ICDM 2008) fitted on every training interaction; a new user is folded in by the
  library's own ``recalculate_user`` (the exact least-squares user step of ALS on their support interactions).
* ``implicit-bpr``: ``implicit.bpr.BayesianPersonalizedRanking`` (Rendle et al., UAI 2009) fitted on the same
  matrix; BPR has no closed-form user step, so a new user is folded in by the same ALS user step on BPR's item
  factors (``recalculate_user`` of an ALS model holding them), i.e. a ridge fold-in with implicit confidences.

An interaction is a row with rating > 0; its rating is the confidence (1 for clicks, a play count when the data
carry weights); rows with rating <= 0 (sampled negatives) are not interactions.  Each training user is counted
once, the first time their task is seen, so the number of epochs does not matter; the factorisation is fitted
when evaluation first needs it after new training users were counted (one fit per run for one pass over the
training users) and its item factors are kept in the checkpoint, so ``metarec test --ckpt_path`` and
``Recommender`` need no refit.  Scores are ``<user factor, item factor>`` (a ranking score: its MAE means nothing).
Needs the ``implicit`` extra (``pip install metarec_pl[implicit]``).  One process: under DDP each rank would fit on
its own share of the training users.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from metarec_pl.algorithms.base import AdaptResult, masked_mse
from metarec_pl.algorithms.baselines import _IdTables
from metarec_pl.data.info import DataInfo
from metarec_pl.data.types import TaskBatch
from metarec_pl.errors import ConfigError

try:
    import implicit
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking
except ImportError:  # the optional extra is not installed: the classes say so when used
    implicit = None


class _ImplicitMF(_IdTables):
    """Shared by ``implicit-als`` and ``implicit-bpr``: tally training interactions, fit, fold new users in.

    Args:
        factors: latent dimension (BPR adds an item-bias column of its own).
        regularization: L2 weight of the library's fit, also the ridge of the fold-in.
        iterations: ALS sweeps / BPR epochs of the library's fit.
        alpha: confidence scale of an interaction (ALS; the fold-in of both).
        seed: ``random_state`` of the library's fit.
    """

    task_sides = ("user",)  # a user vector folded in from the support: one user per task

    def __init__(self, *args, factors: int = 64, regularization: float = 0.05, iterations: int = 15,
                 alpha: float = 1.0, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if implicit is None:
            raise ConfigError(f"{self.name}: needs the 'implicit' package; expected it installed "
                             "(pip install 'metarec_pl[implicit]')")
        if factors < 1 or iterations < 1 or regularization < 0 or alpha <= 0:
            raise ConfigError(f"{self.name}: expected factors >= 1, iterations >= 1, regularization >= 0, alpha > 0; "
                             f"got {factors}, {iterations}, {regularization}, {alpha}")
        self.factors, self.regularization, self.iterations = factors, regularization, iterations
        self.alpha, self.seed = alpha, seed

    @property
    def width(self) -> int:
        """Columns of the library's item factors."""
        raise NotImplementedError

    def bind(self, model: nn.Module, info: Optional[DataInfo] = None) -> None:
        super().bind(model, info)
        self.register_buffer("item_factors", torch.zeros(self.num_items, self.width))
        self.register_buffer("fitted", torch.tensor(False))
        self.seen = np.zeros(self.num_users, dtype=bool)  # training users tallied (this process)
        self.rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (user, item, confidence) per batch
        self.stale = False

    def _tally(self, batch: TaskBatch) -> None:
        keys = batch.key.cpu().numpy()
        new = ~self.seen[keys]
        if not new.any():
            return
        self.seen[keys[new]] = True
        for s in (batch.support, batch.query):
            real = ((s.mask > 0) & (s.rating > 0)).cpu().numpy() & new[:, None]
            users = np.broadcast_to(keys[:, None], real.shape)[real]
            self.rows.append((users, s.item.cpu().numpy()[real], s.rating.float().cpu().numpy()[real]))
        self.stale = True

    def _matrix(self) -> sp.csr_matrix:
        user, item, conf = (np.concatenate(parts) for parts in zip(*self.rows))
        return sp.csr_matrix((conf.astype(np.float32), (user, item)), shape=(self.num_users, self.num_items))

    def _library_model(self):
        raise NotImplementedError

    def _fit(self) -> None:
        model = self._library_model()
        with threadpool_limits(1, "blas"):  # the library parallelises itself; nested BLAS threads only slow it
            model.fit(self._matrix(), show_progress=False)
        self.item_factors.copy_(torch.from_numpy(np.asarray(model.item_factors)))
        self.fitted.fill_(True)
        self.stale = False

    def fold_in(self, samples) -> Tensor:
        """[tasks, width] user factors from each task's interactions among ``samples`` (ALS user step)."""
        real = ((samples.mask > 0) & (samples.rating > 0)).cpu().numpy()
        conf = samples.rating.float().cpu().numpy()[real]
        rows = np.broadcast_to(np.arange(len(real))[:, None], real.shape)[real]
        items = sp.csr_matrix((conf, (rows, samples.item.cpu().numpy()[real])), shape=(len(real), self.num_items))
        als = AlternatingLeastSquares(factors=self.width, regularization=self.regularization, alpha=self.alpha,
                                      num_threads=1)
        als.item_factors = self.item_factors.cpu().numpy()
        with threadpool_limits(1, "blas"):
            users = als.recalculate_user(np.arange(len(real)), items)
        return torch.from_numpy(np.asarray(users)).reshape(len(real), self.width)

    def run(self, model: nn.Module, batch: TaskBatch, steps: int, create_graph: bool,
            chunk_size: Optional[int] = None) -> AdaptResult:
        s, q = batch.support, batch.query
        if self.training:
            self._tally(batch)
            zero = torch.zeros_like(q.rating)
            return AdaptResult(query_loss=masked_mse(zero, q.rating, q.mask), query_pred=zero,
                               support_loss=masked_mse(torch.zeros_like(s.rating), s.rating, s.mask))
        if self.stale:
            self._fit()
        user = self.fold_in(s).to(self.item_factors)
        pred_s = (user[:, None] * self.item_factors[s.item]).sum(-1)
        pred_q = (user[:, None] * self.item_factors[q.item]).sum(-1)
        return AdaptResult(query_loss=masked_mse(pred_q, q.rating, q.mask), query_pred=pred_q,
                           support_loss=masked_mse(pred_s, s.rating, s.mask))

    def outer_loss(self, result: AdaptResult, batch: TaskBatch, params: dict[str, Tensor]) -> Tensor:
        """Nothing to optimise by gradient: a zero tied to the parameters keeps Lightning's loop unchanged."""
        return sum(p.sum() for p in params.values()) * 0.0


class ImplicitALS(_ImplicitMF):
    """``implicit``'s ALS (Hu et al. 2008), new users by its ``recalculate_user``."""

    @property
    def width(self) -> int:
        return self.factors

    def _library_model(self):
        return AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                                       iterations=self.iterations, random_state=self.seed)


class ImplicitBPR(_ImplicitMF):
    """``implicit``'s BPR (Rendle et al. 2009), new users by the ALS user step on its item factors."""

    @property
    def width(self) -> int:
        return self.factors + 1  # the library appends an item-bias column (users get a constant 1 there)

    def _library_model(self):
        return BayesianPersonalizedRanking(factors=self.factors, regularization=self.regularization,
                                           iterations=self.iterations, random_state=self.seed, use_gpu=False)
