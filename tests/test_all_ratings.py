"""Issue 22: protocol ``melu`` version 2 (training on every warm rating), heavy users dealt into bounded tasks
afresh every epoch, baselines fitted on every training rating, and the meta-learned fold-in (``meta-foldin``).
All on tiny generated MeLU-like files (user 7 has 110 warm ratings, user 8 only 8)."""

import json
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from _cli_helpers import run
from _scripts import load_script
from _datasets_fixtures import write_melu
from metarec_pl import harness
from metarec_pl.algorithms.als import _solve_side, als
from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.base import UserTaskSampler
from metarec_pl.data.melu_release import MeLUMovieLens1M
from metarec_pl.data.module import MetaDataModule
from metarec_pl.data.types import DataError, TaskBatch, TaskCollator
from metarec_pl.errors import ConfigError

melu_table = load_script("melu_table")

WARM = {"warm": ["warm_state.rebuilt.json", "warm_state_y.json"]}
SAMPLER = dict(query_size=10, min_support=3, chunk_rows=40)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(write_melu(tmp_path_factory.mktemp("melu") / "melu", warm_name="warm_state.rebuilt.json"))


def _data(root, **options):
    return MeLUMovieLens1M(root=root, state_files=WARM, cache=False, **options).load()


def _dm(root, seed=0, version=2, sampler=SAMPLER):
    return MetaDataModule(dataset="melu-movielens-1m", root=root, seed=seed, sampler="user", sampler_args=sampler,
                          dataset_args=dict(protocol="melu", version=version, state_files=WARM), tasks_per_batch=4,
                          eval_tasks_per_batch=16, id_features=["item"])


def _users(data, rows):
    return set(data.user[rows].tolist())


def test_version_2_keeps_the_filtered_validation_and_test_users_and_trains_on_every_other_warm_rating(root):
    v1, v2, default = _data(root, version=1), _data(root, version=2), _data(root)
    for stage in ("val", "test"):  # validation and every test scenario: exactly version 1's rows
        assert v2.splits[stage].keys() == v1.splits[stage].keys()
        assert all(torch.equal(v2.splits[stage][k], v1.splits[stage][k]) for k in v1.splits[stage])
    for stage in default.splits:  # the default is version 1, row for row
        assert all(torch.equal(default.splits[stage][k], v1.splits[stage][k]) for k in v1.splits[stage])
    warm_file = json.loads((Path(root) / WARM["warm"][0]).read_text())
    held = _users(v2, v2.splits["val"]["warm"]) | _users(v2, v2.splits["test"]["warm"])
    expected = sum(len(items) for u, items in warm_file.items() if int(u) not in held)
    train2, train1 = v2.splits["train"]["train"], v1.splits["train"]["train"]
    assert len(train2) == expected  # every warm rating of every warm user outside validation and test
    assert {7, 8} <= _users(v2, train2) and not {7, 8} & _users(v1, train1)  # 110 and 8 ratings: only in v2
    assert set(train1.tolist()) < set(train2.tolist())
    counts = torch.bincount(v1.user[train1])
    assert int(counts[counts > 0].min()) >= 13 and int(counts.max()) <= 100  # version 1 filters training too


def test_unknown_version_is_one_line(root):
    with pytest.raises(DataError, match=r"protocol melu: version must be 1 .* or 2 .*, got 3$"):
        _data(root, version=3)


def _episode_rows(dm, key, epoch):
    """(support, query) row lists of user ``key``'s training tasks as the training loader's data set hands them
    out in ``epoch``."""
    loader = dm.train_dataloader()
    tasks = [loader.dataset[(i, epoch)] for i, t in enumerate(loader.dataset.tasks) if t.key == key]
    return [(t.support.tolist(), t.query.tolist()) for t in tasks]


def test_a_heavy_user_is_dealt_into_bounded_tasks_that_cover_every_rating_once_per_epoch(root):
    dm = _dm(root)
    n = int((dm.data.user[dm.data.splits["train"]["train"]] == 7).sum())
    assert n == 110
    epochs = [_episode_rows(dm, 7, e) for e in range(3)]
    for parts in epochs:
        assert len(parts) == 3  # ceil(110 / 40)
        rows = [r for s, q in parts for r in s + q]
        assert len(rows) == len(set(rows)) == n  # every rating in exactly one task (support or query)
        assert all(len(q) == 10 and 10 + len(s) <= 40 for s, q in parts)
    assert epochs[1] != epochs[0] and epochs[2] != epochs[1]  # a fresh draw each epoch
    assert _episode_rows(_dm(root), 7, 2) == epochs[2]  # reproducible for a seed
    assert _episode_rows(_dm(root, seed=1), 7, 2) != epochs[2]
    light = [t for t in dm.stage_tasks("train")["train"] if t.key != 7]
    assert all(t.chunk is None for t in light)  # users with at most chunk_rows ratings: one task, as before
    for stage in ("val", "test"):  # evaluation tasks are never chunked
        assert all(t.chunk is None for ts in dm.stage_tasks(stage).values() for t in ts)


def test_without_chunk_rows_the_training_tasks_are_unchanged(root):
    plain = _dm(root, sampler=dict(query_size=10, min_support=3))
    tasks = plain.stage_tasks("train")["train"]
    assert len(tasks) == len({t.key for t in tasks})
    heavy = next(t for t in tasks if t.key == 7)
    assert len(heavy.support) + len(heavy.query) == 110


def test_chunk_rows_below_two_tasks_worth_is_one_line():
    with pytest.raises(DataError, match=r"chunk_rows must be >= 2 \* \(query_size \+ min_support\) = 26"):
        UserTaskSampler(query_size=10, min_support=3, chunk_rows=20)


def _fit(dm, algorithm, epochs=1, **args):
    L.seed_everything(0, verbose=False)
    module = MetaLearner(algorithm=algorithm, data_info=dm.info, algorithm_args=args,
                         optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    harness.trainer(epochs).fit(module, dm)
    return module


def test_baselines_fitted_on_ratings_count_every_training_rating(root):
    dm = _dm(root)
    data, rows = dm.data, dm.data.splits["train"]["train"]
    in_tasks = {r for t in dm.stage_tasks("train")["train"] for r in t.support.tolist() + t.query.tolist()}
    assert len(in_tasks) < len(rows)  # user 8 (8 ratings) makes no task, yet its ratings are training ratings
    counts = torch.bincount(data.item[rows], minlength=data.num_items).double()
    sums = torch.zeros(data.num_items, dtype=torch.float64).index_add_(0, data.item[rows], data.rating[rows].double())
    bias = _fit(dm, "bias", fit="ratings").algorithm
    assert torch.equal(bias.item_count, counts) and torch.allclose(bias.item_sum, sums)
    assert _fit(dm, "popularity", fit="ratings").algorithm.item_count.equal(counts)
    tasks_bias = _fit(dm, "bias").algorithm  # through the tasks (fit: tasks, the default): user 8 is missed
    assert float(tasks_bias.item_count.sum()) < float(counts.sum())


def test_mf_foldin_als_holds_the_als_solution_of_every_training_rating(root):
    dm = _dm(root)
    data, rows = dm.data, dm.data.splits["train"]["train"]
    module = _fit(dm, "mf-foldin", fit="als", dim=4, reg=2.0, als_iters=3)
    torch.manual_seed(0)
    L.seed_everything(0, verbose=False)
    solution = als(data.user[rows], data.item[rows], data.rating[rows], data.num_users, data.num_items, 4, 2.0, 3,
                   seed=int(torch.initial_seed()) % (1 << 31))
    algorithm = module.algorithm.eval()
    items = torch.nonzero(solution.trained).flatten()
    features = {k: v[items][None] for k, v in data.item_features.items()}
    features["item_id"] = items[None] + 1
    z = algorithm.item_factors(items[None]) + algorithm.features(features)
    assert torch.allclose(z[0].double(), solution.items[items], atol=1e-5)
    assert float(module.algorithm.mu) == pytest.approx(float(data.rating[rows].double().mean()), abs=1e-6)


def test_als_half_step_is_each_keys_ridge_regression():
    gen = torch.Generator().manual_seed(0)
    keys = torch.randint(0, 5, (60,), generator=gen)
    other = torch.randn(60, 3, generator=gen, dtype=torch.float64)
    target = torch.randn(60, generator=gen, dtype=torch.float64)
    got = _solve_side(keys, other, target, 5, lam=2.0)
    for k in range(5):
        x = np.hstack([other[keys == k].numpy(), np.ones((int((keys == k).sum()), 1))])
        penalty = np.diag([2.0, 2.0, 2.0, 1e-3])
        want = np.linalg.solve(x.T @ x + penalty, x.T @ target[keys == k].numpy())
        assert np.allclose(got[k].numpy(), want)


def _batch(dm, stage="val", count=6):
    tasks = [t for ts in dm.stage_tasks(stage).values() for t in ts][:count]
    return TaskCollator(dm.data)(tasks)


def test_meta_foldin_starts_as_mf_foldin_with_als(root):
    dm = _dm(root)
    options = dict(dim=4, reg=2.0, ridge=3.0, bias_ridge=0.5, als_iters=3)
    meta = _fit(dm, "meta-foldin", epochs=1, **options)
    meta.algorithm.fit_ratings(dm.data, dm.data.splits["train"]["train"])  # back to the start
    with torch.no_grad():
        for name, p in meta.algorithm.named_parameters():
            if name.startswith("user_map") or name in ("prior_mean", "cold_shift"):
                p.zero_()
        meta.algorithm.log_precision.copy_(torch.tensor([3.0] * 4 + [0.5]).log())
    mf = _fit(dm, "mf-foldin", fit="als", **{k: v for k, v in options.items()})
    batch = _batch(dm)
    meta.eval(), mf.eval()
    assert torch.allclose(meta.adapted_predictions(batch), mf.adapted_predictions(batch), atol=1e-4)


def test_meta_foldin_meta_gradient_equals_a_per_task_loop(root):
    dm = _dm(root)
    module = _fit(dm, "meta-foldin", epochs=1, dim=3, reg=2.0, als_iters=2).double()
    alg = module.algorithm.train()
    tasks = dm.stage_tasks("train")["train"][:3] + dm.stage_tasks("test")["item-cold"][:2]  # old and new items
    collated = TaskCollator(dm.data)([replace(t, scenario="x") for t in tasks])
    with torch.no_grad():
        alg.cold_shift.normal_()  # a learned shift, so the share of new items matters
    batch = TaskBatch(collated.support.to_dtype(torch.float64), collated.query.to_dtype(torch.float64), collated.key)
    params = dict(alg.named_parameters())
    loss = alg.outer_loss(alg.run(module.network, batch, 0, True), batch, {})
    got = torch.autograd.grad(loss, list(params.values()), allow_unused=True)

    losses = []
    for i in range(len(batch)):  # the definition, one task at a time, no padding
        def vectors(s):
            n = int(s.mask[i].sum())
            feats = {k: v[i, :n] for k, v in s.features.items()}
            new = ~alg.trained[s.item[i, :n]]
            z = alg.item_ids(s.item[i, :n]) * ~new[:, None] + alg.features(feats) + alg.intercept
            return z, s.rating[i, :n], feats, new
        zs, ys, _, new = vectors(batch.support)
        zq, yq, fq, _ = vectors(batch.query)
        prior = alg.prior_mean + sum(alg.user_map[f.key](fq[f.key][0]) for f in alg.user_fields)
        x = torch.cat([zs[:, :-1], torch.ones_like(zs[:, :1])], 1)
        lam = torch.diag((alg.log_precision + new.double().mean() * alg.cold_shift).exp())
        theta = torch.linalg.solve(x.T @ x + lam, x.T @ (ys - alg.mu - zs[:, -1]) + lam @ prior)
        pred = alg.mu + zq[:, -1] + zq[:, :-1] @ theta[:-1] + theta[-1]
        losses.append(((pred - yq) ** 2).mean())
    want = torch.autograd.grad(torch.stack(losses).mean(), list(params.values()), allow_unused=True)
    for name, g, w in zip(params, got, want):
        assert (g is None) == (w is None), name
        if g is not None:
            assert torch.allclose(g, w, atol=1e-10), name


def _vectors(alg, s, i):
    """One task's real rows: item vectors [n, d + 1] (id part dropped for new items), ratings, features."""
    n = int(s.mask[i].sum())
    feats = {k: v[i, :n] for k, v in s.features.items()}
    new = ~alg.trained[s.item[i, :n]]
    return alg.item_ids(s.item[i, :n]) * ~new[:, None] + alg.features(feats) + alg.intercept, s.rating[i, :n], feats


@pytest.mark.parametrize("history_bias", ["shared", "own"])
def test_meta_foldin_history_folds_in_a_known_users_training_ratings_with_the_support(root, history_bias):
    dm = _dm(root)
    module = _fit(dm, "meta-foldin", epochs=1, dim=3, reg=2.0, als_iters=2, history=0.5,
                  history_bias=history_bias).double()
    alg = module.algorithm.eval()
    data, rows = dm.data, dm.data.splits["train"]["train"]
    collated = _batch(dm, "test", 40)  # the known users' new items (item-cold) come after the other scenarios
    batch = TaskBatch(collated.support.to_dtype(torch.float64), collated.query.to_dtype(torch.float64), collated.key)
    with torch.no_grad():
        got = alg.run(module.network, batch, 0, False).query_pred
        known = 0
        for i in range(len(batch)):
            zs, ys, _ = _vectors(alg, batch.support, i)
            zq, yq, fq = _vectors(alg, batch.query, i)
            prior = alg.prior(batch.query)[i]
            own = rows[data.user[rows] == batch.query.user[i, 0]]  # the user's training ratings, if any
            known += len(own) > 0
            feats = {k: v[data.item[own]] for k, v in data.item_features.items()}
            zh = alg.item_ids(data.item[own]) + alg.features(feats) + alg.intercept
            yh = data.rating[own].double() - alg.mu - zh[:, -1]
            new_share = (~alg.trained[batch.support.item[i, :len(ys)]]).double().mean()
            lam = (alg.log_precision + new_share * alg.cold_shift).exp()
            # the definition: one least-squares problem over support and weighted history rows; "own": the history
            # rows get a bias of their own (an extra unpenalised unknown) instead of b_u
            extra = 1 if history_bias == "own" else 0
            xs = torch.cat([zs[:, :-1], torch.ones_like(zs[:, :1]), torch.zeros(len(zs), extra)], 1)
            xh = torch.cat([zh[:, :-1], torch.full((len(zh), 1), 1.0 - extra), torch.ones(len(zh), extra)], 1)
            xh = xh * 0.5 ** 0.5
            if extra and len(own) == 0:
                xh = torch.zeros(1, xs.shape[1], dtype=torch.float64)
                xh[0, -1] = 1.0  # a user with no history: its own bias is pinned by one zero row
                yh = torch.zeros(1, dtype=torch.float64)
            x = torch.cat([xs, xh])
            y = torch.cat([ys - alg.mu - zs[:, -1], yh * 0.5 ** 0.5])
            lam_full = torch.cat([lam, torch.zeros(extra)])
            prior_full = torch.cat([prior, torch.zeros(extra)])
            theta = torch.linalg.solve(x.T @ x + torch.diag(lam_full), x.T @ y + lam_full * prior_full)[:len(lam)]
            want = alg.mu + zq[:, -1] + zq[:, :-1] @ theta[:-1] + theta[-1]
            assert torch.allclose(got[i, :len(yq)], want, atol=1e-8), i
    assert known >= 3 and known < len(batch)  # known users (history) and held-out ones (none) both checked
    alg.train()  # in training the history never enters (a training user's history holds the task's query)
    off = _fit(dm, "meta-foldin", epochs=1, dim=3, reg=2.0, als_iters=2).double().algorithm.train()
    off.load_state_dict(alg.state_dict())
    assert torch.equal(alg.run(module.network, batch, 0, False).query_pred,
                       off.run(module.network, batch, 0, False).query_pred)


def test_meta_foldin_loaded_from_its_weights_to_test_gets_the_history_from_the_data(root):
    dm = _dm(root)
    options = dict(dim=3, reg=2.0, als_iters=2, history=1.0, history_bias="own")
    fitted = _fit(dm, "meta-foldin", epochs=1, **options)
    loaded = MetaLearner(algorithm="meta-foldin", data_info=dm.info, algorithm_args=options)
    loaded.load_state_dict(fitted.state_dict())
    assert loaded.algorithm.history_rows is None  # the weights do not hold the training ratings
    tester = lambda: L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,  # noqa: E731
                               enable_model_summary=False, inference_mode=False)
    got, want = tester().test(loaded, dm, verbose=False)[0], tester().test(fitted, dm, verbose=False)[0]
    assert got["test/item-cold/mae"] == pytest.approx(want["test/item-cold/mae"], abs=1e-6)
    without = MetaLearner(algorithm="meta-foldin", data_info=dm.info, algorithm_args={**options, "history": 0.0})
    without.load_state_dict(fitted.state_dict())
    plain = tester().test(without, dm, verbose=False)[0]
    assert abs(plain["test/item-cold/mae"] - want["test/item-cold/mae"]) > 1e-4  # the history made a difference
    assert plain["test/user-cold/mae"] == pytest.approx(want["test/user-cold/mae"], abs=1e-6)  # new users: none


def test_meta_foldin_bad_options_are_one_line(root):
    dm = _dm(root)
    with pytest.raises(ConfigError, match=r"history_bias 'shared' or 'own', got history=1.0, history_bias='x'$"):
        MetaLearner(algorithm="meta-foldin", data_info=dm.info, algorithm_args=dict(history=1.0, history_bias="x"))


def test_all_ratings_section_is_written_into_the_page_and_kept_by_the_paper_render(tmp_path):
    results = [dict(method=m, seed=s, epochs=1, best_epoch=1, cold_epoch=None, train_s=1.0, test_s=1.0, total_s=3.0,
                    val_mae=0.7, chosen={}, test={f"test/{sc}/{k}": base + 0.01 * s + (0.02 if m == "bias" else 0)
                                                  for sc in melu_table.SCENARIOS for k in melu_table.TABLE_METRICS})
               for m, base in (("bias", 0.70), ("mf-foldin", 0.71), ("meta-foldin", 0.69)) for s in (0, 1)]
    meta = dict(command="x", when="now", machine="m", load="1", threads=1, jobs=2, wall_s={"0": 10.0, "1": 11.0})
    section = melu_table.render_all_ratings(results, meta, paper=None)
    page = "# Results\n\nintro\n\n## warm\n\npaper table\n"
    written = melu_table.with_section(page, section)
    assert written.startswith("# Results\n\nintro\n\n" + melu_table.ALL_BEGIN) and written.endswith("paper table\n")
    assert "| warm | meta-foldin | 0.6950 | ≤ 0.69 (missed) | mf-foldin | 0.7150 | seed 0: -0.0200, " \
           "seed 1: -0.0200 | 2/2 | yes |" in section
    assert melu_table.with_section(written, section) == written  # replaced, not added twice
    assert melu_table.kept_section(written) == section


def _cli(root, tmp_path, sampler_args="{query_size: 10, min_support: 3, chunk_rows: 40}", command="fit"):
    state = '{warm: ["warm_state.rebuilt.json", "warm_state_y.json"]}'
    return run([command, "--model.algorithm", "meta-foldin", "--model.algorithm_args", "{dim: 4, als_iters: 2}",
                "--data.dataset", "melu-movielens-1m", "--data.root", root,
                "--data.dataset_args", f"{{protocol: melu, version: 2, cache: false, state_files: {state}}}",
                "--data.sampler_args", sampler_args, "--data.id_features", "[item]", "--data.tasks_per_batch", "8",
                "--trainer.max_epochs", "2", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(tmp_path)], cwd=tmp_path)


def test_the_cli_trains_meta_foldin_on_every_warm_rating(root, tmp_path):
    out = _cli(root, tmp_path)
    assert out.code == 0, out.err[-3000:]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())[-1].startswith("epoch=1-")


def test_the_cli_refuses_a_too_small_chunk_in_one_line(root, tmp_path):
    out = _cli(root, tmp_path, sampler_args="{query_size: 10, min_support: 3, chunk_rows: 12}")
    assert out.code == 2 and len(out.error_lines) == 1, out.err[-3000:]
    assert "chunk_rows must be >= 2 * (query_size + min_support) = 26" in out.error_lines[0]
    assert "Traceback" not in out.err
