"""The `implicit` package's ALS / BPR as fold-in baselines: exact user step, real interactions only, checkpoints."""

import numpy as np
import pytest
import torch

pytest.importorskip("implicit")

from metarec_pl.algorithms.implicit_mf import ImplicitALS, ImplicitBPR  # noqa: E402
from metarec_pl.data.info import DataInfo  # noqa: E402
from metarec_pl.data.types import Samples, Task, TaskCollator  # noqa: E402
from metarec_pl.models.mlp import MLPNet  # noqa: E402
from metarec_pl.testing import tiny_data  # noqa: E402


def bound(cls, data, **kwargs):
    algo = cls(**kwargs)
    model = MLPNet(data.schema)
    algo.bind(model, DataInfo.of(data))
    return algo, model


def user_tasks(data, users, query_size=4):
    tasks = []
    for u in users:
        rows = torch.nonzero(data.user == u).flatten()
        tasks.append(Task(u, rows[query_size:], rows[:query_size]))
    return TaskCollator(data)(tasks)


def test_fold_in_is_the_exact_als_user_step():
    # Hu et al. 2008: x_u = (Y'Y + Y'(C_u - I)Y + lambda I)^-1 Y' C_u p_u, with c = alpha * r on interactions
    data = tiny_data(implicit=True)
    algo, _ = bound(ImplicitALS, data, factors=5, regularization=0.3, alpha=2.0)
    y = torch.randn(data.num_items, 5, generator=torch.Generator().manual_seed(0))
    algo.item_factors.copy_(y)
    items, rating = torch.tensor([[1, 4, 7, 9]]), torch.tensor([[1.0, 3.0, 1.0, 0.0]])  # item 9: a negative
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    got = algo.fold_in(Samples({}, rating, mask, torch.zeros_like(items), items))[0].double()
    Y, c = y.double(), 2.0 * rating[0, :3].double()
    A = Y.T @ Y + sum((ci - 1) * torch.outer(Y[i], Y[i]) for ci, i in zip(c, items[0, :3])) + 0.3 * torch.eye(5)
    b = sum(ci * Y[i] for ci, i in zip(c, items[0, :3]))
    assert torch.allclose(got, torch.linalg.solve(A, b), atol=1e-5)


@pytest.mark.parametrize("cls", [ImplicitALS, ImplicitBPR])
def test_fit_counts_real_interactions_once_and_ranks_held_out_positives(cls):
    data = tiny_data(num_users=80, num_items=40, implicit=True)
    algo, model = bound(cls, data, factors=8, iterations=30)
    batch = user_tasks(data, range(60))
    algo.train()
    algo.run(model, batch, 0, False)
    algo.run(model, batch, 0, False)  # a second epoch must not count the users again
    matrix = algo._matrix()
    positives = int((data.rating[torch.isin(data.user, torch.arange(60))] > 0).sum())
    assert matrix.nnz == positives and set(np.unique(matrix.data)) == {1.0}  # negatives (rating 0) left out
    algo.eval()
    test = user_tasks(data, range(60, 80))
    pred = algo.run(model, test, 0, False).query_pred
    assert bool(algo.fitted) and torch.isfinite(pred).all()
    # the support's folded-in user scores its own support positives above its support negatives
    s = test.support
    scores = (algo.fold_in(s)[:, None] * algo.item_factors[s.item]).sum(-1)
    pos, neg = (s.mask > 0) & (s.rating > 0), (s.mask > 0) & (s.rating <= 0)
    assert scores[pos].mean() > scores[neg].mean()


def test_item_factors_travel_in_the_state_dict():
    data = tiny_data(implicit=True)
    algo, model = bound(ImplicitALS, data, factors=4)
    algo.train()
    algo.run(model, user_tasks(data, range(30)), 0, False)
    algo.eval()
    batch = user_tasks(data, range(30, 40))
    before = algo.run(model, batch, 0, False).query_pred
    fresh, fresh_model = bound(ImplicitALS, data, factors=4)
    fresh.load_state_dict(algo.state_dict())
    fresh.eval()
    assert bool(fresh.fitted) and torch.equal(fresh.run(fresh_model, batch, 0, False).query_pred, before)


def test_bad_options_are_refused_in_one_line():
    with pytest.raises(ValueError, match="expected factors >= 1"):
        ImplicitALS(factors=0)
