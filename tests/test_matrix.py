"""Every registered algorithm x task sampler (user, item) x data set (synthetic; an ``interactions`` log with and
without feature tables) either trains one meta-step through ``metarec fit`` or refuses in one line (exit code 2,
``metarec: error: ...``, no traceback).  Tiny data, one step, no logger."""

import random

import pytest

from _cli_helpers import run
from metarec_pl import plugins

ALGORITHMS = sorted(r.name for r in plugins.registrations("algorithm"))
# algorithms that may refuse a combination, and the words of their refusal (anything else must train)
# the fold-ins (a user vector fitted to the support) serve user-as-task only
EXPECTED_REFUSALS: dict[tuple[str, str, str], list[str]] = {
    (algorithm, "item", data): ["data.sampler: gives item-as-task tasks", f"algorithm '{algorithm}' serves user",
                                "expected data.sampler user"]
    for algorithm in ("mf-foldin", "meta-foldin", "implicit-als", "implicit-bpr")
    for data in ("synthetic", "interactions-bare", "interactions-features")}


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """A tiny log (200 users x 12 of 20 items, ratings 1-5, string user ids, non-contiguous item ids: enough rows
    per item in the 20 validation users for item-as-task) and feature tables for both sides."""
    folder = tmp_path_factory.mktemp("matrix")
    rng = random.Random(0)
    items = [3 * i + 7 for i in range(20)]
    rows = ["user,item,rating"]
    for u in range(200):
        rows += [f"u{u},{i},{rng.randint(1, 5)}" for i in rng.sample(items, 12)]
    (folder / "log.csv").write_text("\n".join(rows) + "\n")
    (folder / "users.csv").write_text("user,age,job\n" + "\n".join(f"u{u},{u % 4},{u % 3}" for u in range(200)) + "\n")
    (folder / "items.csv").write_text("item,genre\n" + "\n".join(f"{i},{i % 5}" for i in items) + "\n")
    return folder


def data_args(kind, folder):
    if kind == "synthetic":
        return ["--data.dataset", "synthetic", "--data.dataset_args",
                "{num_users: 60, num_items: 40, min_ratings: 12, max_ratings: 20}"]
    args = {"path": str(folder / "log.csv"), "cache": False}
    if kind == "interactions-features":
        args["user_features"] = {"path": str(folder / "users.csv"), "id": "user",
                                 "fields": {"age": "categorical", "job": "categorical"}}
        args["item_features"] = {"path": str(folder / "items.csv"), "id": "item", "fields": {"genre": "categorical"}}
    return ["--data.dataset", "interactions", "--data.dataset_args", repr(args).replace("'", '"').replace("False",
                                                                                                         "false")]


def inner_steps(algorithm):
    """One inner step for a gradient-based algorithm; the others have no inner loop and refuse the option."""
    return ["--model.inner_steps", "1"] if plugins.get_algorithm(algorithm).gradient_based else []


@pytest.mark.parametrize("data", ["synthetic", "interactions-bare", "interactions-features"])
@pytest.mark.parametrize("sampler", ["user", "item"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_trains_a_step_or_refuses_in_one_line(logs, tmp_path, algorithm, sampler, data):
    out = run(["fit", "--model.algorithm", algorithm, "--model.network", "melu",
               "--model.network_args", "{embedding_dim: 4, hidden: [8]}", *inner_steps(algorithm),
               "--data.sampler", sampler, "--data.sampler_args", "{query_size: 4, min_support: 2}",
               "--data.tasks_per_batch", "4", *data_args(data, logs),
               "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
               "--trainer.logger", "false",
               "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
               "--trainer.default_root_dir", str(tmp_path)], cwd=tmp_path)
    assert "Traceback" not in out.err, out.err[-4000:]
    if out.code == 0:  # Lightning's checkpoint at the end names the steps taken
        assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch=0-step=1.ckpt"]
        return
    assert out.code == 2 and len(out.error_lines) == 1, (out.code, out.err[-4000:])
    words = EXPECTED_REFUSALS.get((algorithm, sampler, data))
    assert words is not None, f"refused but not expected to: {out.error_lines[0]}"
    assert all(w in out.error_lines[0] for w in words), out.error_lines[0]
