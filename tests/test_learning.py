"""On the embedded world, adaptation pays: MAML beats the global model and its own zero-shot predictions."""

import lightning as L
import pytest

from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.module import MetaDataModule


def fit_and_test(algorithm: str, epochs: int = 10) -> dict[str, float]:
    L.seed_everything(0)
    dm = MetaDataModule(sampler_args=dict(query_size=10, min_support=3), tasks_per_batch=32, eval_tasks_per_batch=128)
    inner = dict(adapt=["head.*"], inner_steps=5, inner_lr=0.05) if algorithm != "none" else {}  # none: no inner loop
    module = MetaLearner(algorithm=algorithm, **inner, network_args=dict(embedding_dim=16), data_info=dm.info)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=1.0)
    trainer.fit(module, dm)
    return trainer.test(module, dm, verbose=False)[0]


@pytest.fixture(scope="module")
def results():
    return {name: fit_and_test(name) for name in ("none", "maml")}


def test_maml_beats_the_global_model_on_new_users(results):
    # user-cold: new users, known items -- the scenario the synthetic world's training tasks resemble.
    # (On the cold-item scenarios, with ~8 support ratings, 10 epochs of MAML do not beat `none`: docs/concepts.md.)
    assert results["maml"]["test/user-cold/mae"] < results["none"]["test/user-cold/mae"] - 0.02


def test_maml_adaptation_beats_its_zero_shot(results):
    assert results["maml"]["test/user-cold/mae"] < results["maml"]["test/user-cold/mae_zero_shot"] - 0.05
    assert results["maml"]["test/mae"] < results["maml"]["test/mae_zero_shot"] - 0.02
    assert "test/mae_zero_shot" not in results["none"]  # nothing adapts, so no zero-shot twin


def test_the_oracle_noise_floor_is_below_every_learner(results):
    from metarec_pl.data.synthetic import SyntheticWorld

    world = SyntheticWorld()
    data = world.load()
    floor = world.oracle_mae(data.splits["test"]["user-cold"])
    assert 0.1 < floor < results["maml"]["test/user-cold/mae"]
