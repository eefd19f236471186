"""benchmarks/mf_reference.py: the independent biased-MF cross-check fits what it claims to fit."""


import torch

from _scripts import load_script

mf_reference = load_script("mf_reference")


def _low_rank_ratings(num_users=40, num_items=30, dim=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    p, q = torch.randn(num_users, dim, generator=gen), torch.randn(num_items, dim, generator=gen)
    bu, bi = torch.randn(num_users, generator=gen), torch.randn(num_items, generator=gen)
    user, item = torch.meshgrid(torch.arange(num_users), torch.arange(num_items), indexing="ij")
    user, item = user.flatten(), item.flatten()
    rating = (3.5 + bu[user] + bi[item] + (p[user] * q[item]).sum(1)).double()
    return user, item, rating


def test_als_recovers_an_exact_low_rank_matrix_and_folds_in_a_new_user():
    user, item, rating = _low_rank_ratings()
    new = user == 39  # user 39 is left out of training and folded in: 15 support, 15 query ratings
    mu, users, items = mf_reference.fit(user[~new], item[~new], rating[~new], 40, 30, dim=3, reg=1e-6, sweeps=60)
    u, i = users[user[~new]], items[item[~new]]
    assert (mu + u[:, 3] + i[:, 3] + (u[:, :3] * i[:, :3]).sum(1) - rating[~new]).abs().max() < 1e-3
    s, q = torch.nonzero(new).flatten()[:15], torch.nonzero(new).flatten()[15:]
    errors = mf_reference.fold_in_mae(mu, items, (item[s], rating[s]), (item[q], rating[q]), reg=1e-6)
    assert len(errors) == 15 and errors.max() < 1e-2


def test_a_training_users_fold_in_is_their_fitted_row():
    user, item, rating = _low_rank_ratings(seed=1)
    rating = rating + 0.3 * torch.randn(len(rating), generator=torch.Generator().manual_seed(2)).double()  # noisy
    mu, users, items = mf_reference.fit(user, item, rating, 40, 30, dim=2, reg=3.0, sweeps=5)
    rows = torch.nonzero(user == 7).flatten()
    w = mf_reference.ridge_rows(torch.zeros(len(rows), dtype=torch.long), items[item[rows], :2],
                                rating[rows] - mu - items[item[rows], 2], 1, 3.0)[0]
    assert torch.allclose(w, users[7], atol=1e-10)
