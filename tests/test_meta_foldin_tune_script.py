"""benchmarks/meta_foldin_tune.py: validation curves per epoch and evaluation-time options tried after the fit, on
tiny generated MeLU files; no test scenario is evaluated.  (Their users rate too few items for held-out validation
items to leave a user 13 ratings, so the run here has none: ``--val-items 0``; the history's effect on known users'
new items is tested in test_all_ratings.py.)"""

import json

from _datasets_fixtures import write_melu
from _scripts import load_script

meta_foldin_tune = load_script("meta_foldin_tune")


def test_curves_and_evaluation_time_grid_on_validation_users_only(tmp_path):
    root = write_melu(tmp_path / "melu", warm_name="warm_state.reconstructed.json")
    out = tmp_path / "tune.jsonl"
    for name, config in (("a", '{"dim": 3, "als_iters": 2}'), ("b", '{"dim": 3, "als_iters": 2, "reg": 8.0}')):
        meta_foldin_tune.main(["--root", str(root), "--epochs", "2", "--keep", "1", "--name", name, "--out", str(out),
                               "--val-items", "0", "--config", config, "--grid", '{"history": [0.0, 1.0]}'])
    a, b = [json.loads(line) for line in out.read_text().splitlines()]
    assert [c["epoch"] for c in a["curves"]] == [1, 2] and set(a["curves"][0]) == {"epoch", "time", "warm"}
    assert a["config"] == {"dim": 3, "als_iters": 2} and b["config"]["reg"] == 8.0 and a["keep"] == 1
    assert a["curves"][-1]["warm"] != b["curves"][-1]["warm"]  # the --config reached the fit
    for grid in (a["grid_last"], a["grid_keep"]):
        assert [g["history"] for g in grid] == [0.0, 1.0]
        assert not any(k.startswith("test/") for g in grid for k in g)
        assert grid[0]["val/warm/mae"] == grid[1]["val/warm/mae"]  # validation users are new users: no history
    assert a["grid_last"][0]["val/warm/mae"] == a["curves"][-1]["warm"]  # the grid ran on the last epoch's weights
