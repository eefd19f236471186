"""DDP with second-order MAML: 2 CPU ranks (gloo) take the same steps as one process that sees the same tasks,
and the batch sampler gives every task to exactly one rank."""

import functools
import json

import lightning as L
import pytest
import torch

from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.module import MetaDataModule, ScenarioBatchSampler
from metarec_pl.data.types import Task

STEPS = 3


class RecordKeys(L.Callback):
    """Writes the task keys of every training batch this rank sees to ``{folder}/rank{r}.json``."""

    def __init__(self, folder: str) -> None:
        self.folder, self.keys = folder, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.keys.append(batch.key.tolist())

    def on_train_end(self, trainer, pl_module) -> None:
        with open(f"{self.folder}/rank{trainer.global_rank}.json", "w") as f:
            json.dump(self.keys, f)


class EndProcessGroup(L.Callback):
    """Destroys the gloo process group when a spawned rank's fit ends: left to the worker's exit, gloo's threads
    sometimes abort it ("terminate called without an active exception", SIGABRT; ~1 run in 4 here, also before this
    callback's code existed), which fails the test after the training it checks has finished."""

    def teardown(self, trainer, pl_module, stage) -> None:
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def fit(tmp_path, devices: int, network: str = "mlp") -> tuple[dict, MetaLearner]:
    L.seed_everything(0)
    # 40 users, every one with enough ratings: 28 training tasks, so every batch of 8 (and the last, of 4) splits
    # evenly over 2 ranks and the mean over a batch equals the mean of the ranks' means
    dm = MetaDataModule(dataset_args=dict(num_users=40, num_items=60, min_ratings=14, max_ratings=30),
                        sampler_args=dict(query_size=6, min_support=3), tasks_per_batch=8)
    network_args = {"hidden": [16, 8]} if network == "mlp" else {"embedding_dim": 4, "hidden": [16, 8]}
    module = MetaLearner(algorithm="maml", network=network, network_args=network_args, adapt=["*"],
                         inner_steps=2, inner_lr=0.05, optimizer=functools.partial(torch.optim.SGD, lr=0.5),
                         data_info=dm.info)
    initial = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                        use_distributed_sampler=False,  # ScenarioBatchSampler splits batches across ranks itself
                        max_steps=STEPS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[RecordKeys(str(tmp_path)), EndProcessGroup()])
    trainer.fit(module, dm)
    return initial, module


@pytest.mark.parametrize("network", ["mlp", "melu"])  # melu: embedding tables, and the values seen in training
def test_two_ddp_ranks_equal_one_process_on_the_same_tasks(tmp_path, network):
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    single_dir.mkdir(), ddp_dir.mkdir()
    initial, single = fit(single_dir, 1, network)
    _, ddp = fit(ddp_dir, 2, network)
    single_keys = json.loads((single_dir / "rank0.json").read_text())
    rank_keys = [json.loads((ddp_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(single_keys) == len(rank_keys[0]) == len(rank_keys[1]) == STEPS
    for step, keys in enumerate(single_keys):  # each step: the ranks split the single process's batch
        a, b = rank_keys[0][step], rank_keys[1][step]
        assert not set(a) & set(b) and sorted(a + b) == sorted(keys)
    for (name, p), q in zip(single.named_parameters(), ddp.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    assert max(float((p - initial[n]).abs().max()) for n, p in single.named_parameters()) > 1e-3  # it trained
    if network == "melu":  # each rank recorded its share; the union is what one process records
        assert single.network.encoder.seen.any()
        assert torch.equal(ddp.network.encoder.seen, single.network.encoder.seen)


def tasks(sizes: dict[str, int]) -> list[Task]:
    out = []
    for scenario, n in sizes.items():
        out += [Task(len(out) + i, torch.tensor([0]), torch.tensor([0]), scenario) for i in range(n)]
    return out


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_split_every_batch_without_duplicates(shuffle):
    data = tasks({"a": 21, "b": 5, "c": 1})  # tails of 5, 5 and 1 tasks
    per_rank = [list(ScenarioBatchSampler(data, 8, shuffle, torch.Generator().manual_seed(3), 3, r))
                for r in range(3)]
    whole = list(ScenarioBatchSampler(data, 8, shuffle, torch.Generator().manual_seed(3)))
    seen = [i for batches in per_rank for b in batches for i in b]
    assert len(seen) == len(set(seen))  # no task twice
    kept = [b for b in whole if len(b) >= 3] if shuffle else whole
    assert sorted(seen) == sorted(i for b in kept for i in b)
    for r, batches in enumerate(per_rank):
        assert len(batches) == len(ScenarioBatchSampler(data, 8, shuffle, torch.Generator(), 3, r))
        assert all(batches)
    if shuffle:  # every rank takes part in every training step, and the step's tasks are one global batch
        assert len({len(b) for b in per_rank}) == 1
        for step in zip(*per_rank):
            assert sorted(i for b in step for i in b) in [sorted(b) for b in kept]
            assert len({data[i].scenario for b in step for i in b}) == 1


def test_bad_rank_is_one_clear_error():
    with pytest.raises(ValueError, match="rank"):
        ScenarioBatchSampler(tasks({"a": 4}), 2, True, torch.Generator(), 2, 2)
