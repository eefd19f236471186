"""metarec-tanp, tested as any plugin author would: only metarec_pl's public API and metarec_pl.testing."""

import contextlib

import lightning as L
import pytest
import torch

import metarec_pl
import metarec_pl.testing
from metarec_pl import DataInfo, MetaLearner
from metarec_pl.testing import metarec_plugin, tiny_batch, tiny_data  # noqa: F401
from metarec_tanp import NPResult, TaNP, plugin


@pytest.fixture()
def tanp(metarec_plugin):
    """Registered at run time too, so the tests also pass from a source checkout that is not pip-installed."""
    if "tanp" not in [r.name for r in metarec_pl.registrations("algorithm")]:
        metarec_plugin(plugin, name="tanp-under-test", distribution="metarec-tanp")
    return "tanp"


def test_installed_entry_point_registers_tanp():
    rows = [r for r in metarec_pl.registrations("algorithm") if r.name == "tanp"]
    if not rows:
        pytest.skip("metarec-tanp is not pip-installed in this environment")
    assert rows[0].obj is TaNP and rows[0].distribution == "metarec-tanp"


def module(tanp_name, data, **args) -> MetaLearner:
    torch.manual_seed(0)
    return MetaLearner(algorithm=tanp_name, algorithm_args=args, data_info=DataInfo(data.schema, rating_mean=3.5))


@pytest.mark.parametrize("deterministic", ["mean", "attention"])
def test_evaluation_is_deterministic_exact_under_padding_and_order_free(tanp, deterministic):
    data = tiny_data()
    learner = module(tanp, data, deterministic=deterministic).eval()
    batch = tiny_batch(data, support_sizes=(2, 5, 9))
    with torch.no_grad():
        pred = learner.adapt(batch).query_pred
        torch.testing.assert_close(learner.adapt(batch).query_pred, pred)
        alone = learner.adapt(tiny_batch(data, support_sizes=(2,))).query_pred
        torch.testing.assert_close(alone[0], pred[0])
        perm = torch.randperm(batch.support.mask.shape[1], generator=torch.Generator().manual_seed(0))
        s = batch.support
        shuffled = metarec_pl.Samples({k: v[:, perm] for k, v in s.features.items()}, s.rating[:, perm],
                                      s.mask[:, perm], s.user[:, perm], s.item[:, perm])
        reordered = metarec_pl.TaskBatch(shuffled, batch.query, batch.key, batch.scenario)
        torch.testing.assert_close(learner.adapt(reordered).query_pred, pred)


@pytest.mark.parametrize("deterministic", ["mean", "attention"])
def test_support_ratings_change_the_prediction(tanp, deterministic):
    data = tiny_data()
    learner = module(tanp, data, deterministic=deterministic).eval()
    batch = tiny_batch(data, support_sizes=(9,))
    with torch.no_grad():
        before = learner.adapt(batch).query_pred
        batch.support.rating.fill_(1.0)
        assert not torch.allclose(learner.adapt(batch).query_pred, before)


def test_training_adds_the_kl_term(tanp):
    data = tiny_data()
    learner = module(tanp, data, kl_weight=0.5).train()
    batch = tiny_batch(data)
    result = learner.adapt(batch, create_graph=True)
    assert isinstance(result, NPResult) and result.kl.shape == (len(batch),) and (result.kl >= 0).all()
    loss = learner.algorithm.outer_loss(result, batch, dict(learner.network.named_parameters()))
    torch.testing.assert_close(loss, result.query_loss.mean() + 0.5 * result.kl.mean())
    loss.backward()
    assert learner.network.encoder.tables["user_age"].weight.grad is not None  # the network's encoder is trained


def test_implicit_feedback(tanp):
    data = tiny_data(implicit=True)
    learner = module(tanp, data).eval()
    with torch.no_grad():
        result = learner.adapt(tiny_batch(data, implicit=True))
    assert result.query_pred.isfinite().all() and result.kl is None


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_item_as_task_through_the_trainer_under_each_precision(tanp, precision):
    from metarec_pl.data.module import MetaDataModule

    dm = MetaDataModule(dataset_args=dict(num_users=80, num_items=30, min_ratings=10, max_ratings=20),
                        sampler="item", sampler_args=dict(query_size=5), tasks_per_batch=8)
    for deterministic in ("mean", "attention"):
        learner = MetaLearner(algorithm=tanp, algorithm_args={"deterministic": deterministic}, data_info=dm.info)
        trainer = L.Trainer(max_epochs=1, limit_train_batches=2, precision=precision, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(learner, dm)
        assert torch.isfinite(torch.tensor(trainer.callback_metrics["val/mae"].item())), deterministic


def test_bad_options_fail_in_one_line(tanp):
    with pytest.raises(ValueError, match=r"^tanp: need hidden >= 1, latent >= 1, kl_weight >= 0; got 0, 32, 0.1$"):
        module(tanp, tiny_data(), hidden=0)
    with pytest.raises(ValueError, match=r"^tanp: deterministic must be 'mean' or 'attention', got 'max'$"):
        module(tanp, tiny_data(), deterministic="max")


@pytest.fixture(scope="module")
def world_results():
    """bias and tanp on the same world, tasks, protocol and trainer; tanp also before training.  The setting is the
    core's for its metric learners (tests/test_metric_learners.py), chosen on worlds with seeds 1-3, never this one:
    item ids and no user fields, AdamW with weight decay 1.0, 150 epochs, ``deterministic: attention``."""
    import functools

    from metarec_pl.data.module import MetaDataModule

    with metarec_pl.testing.registered(plugin, name="tanp-world", distribution="metarec-tanp") if "tanp" not in [
            r.name for r in metarec_pl.registrations("algorithm")] else contextlib.nullcontext():
        results = {}
        for algorithm, epochs in (("bias", 1), ("tanp", 150)):
            L.seed_everything(0)
            dm = MetaDataModule(dataset_args=dict(num_users=300, num_items=150, min_ratings=20, max_ratings=50),
                                sampler_args=dict(query_size=10, min_support=3), tasks_per_batch=32,
                                eval_tasks_per_batch=128, id_features=["item"], drop_features=["user"])
            learner = MetaLearner(algorithm=algorithm, network_args=dict(embedding_dim=16), data_info=dm.info,
                                  algorithm_args={"deterministic": "attention"} if algorithm == "tanp" else {},
                                  optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=1.0))
            trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                                num_sanity_val_steps=0)
            if algorithm == "tanp":
                results["untrained"] = trainer.test(learner, dm, verbose=False)[0]
            trainer.fit(learner, dm)
            results[algorithm] = trainer.test(learner, dm, verbose=False)[0]
    print({n: {k: round(v, 4) for k, v in r.items() if k.endswith("/mae")} for n, r in results.items()})
    return results


def test_learns_on_the_embedded_world(world_results):
    for key in ("test/mae", "test/user-cold/mae", "test/user+item-cold/mae"):
        assert world_results["tanp"][key] < world_results["untrained"][key] - 0.03, key


@pytest.mark.parametrize("key", ["test/user-cold/mae", "test/mae"])
def test_beats_bias_on_the_embedded_world(world_results, key):
    assert world_results["tanp"][key] < world_results["bias"][key]
