"""benchmarks/tallrec_anchor.py: the like/dislike records of TALLRec's ML-100K setting re-created from its
description (history = the user's previous ratings, liked ones as the sequence; like = rating > 3; the last records
in time; 80/10/10 in time order), and an end-to-end run on tiny generated files."""

import json

import torch

from _datasets_fixtures import write_ml100k
from _scripts import load_script
from test_sequential_protocol import log_rows

tallrec = load_script("tallrec_anchor")


def test_records_follow_the_description():
    # user 1 rates items 1..5 at times 1..5; user 2 rates items 6..8 at 1.5, 2.5, 3.5
    user = torch.tensor([1, 1, 1, 1, 1, 2, 2, 2])
    item = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8])
    rating = torch.tensor([5.0, 1.0, 4.0, 5.0, 2.0, 4.0, 3.0, 4.0])
    time = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 1.5, 2.5, 3.5])
    train, val, test, start = tallrec.records(user, item, rating, time, history=2, window=4)
    # records in time: (u1, item 3) at 3, (u2, item 8) at 3.5, (u1, item 4) at 4, (u1, item 5) at 5
    assert train.target.tolist() == [3, 8, 4] and len(val) == 0 and test.target.tolist() == [5]
    assert start == 3.0
    assert train.like.tolist() == [1.0, 1.0, 1.0] and test.like.tolist() == [0.0]  # like = rating > 3
    # the sequence: the liked items (codes + 1) of the previous 2 ratings, time order, right-padded
    assert train.history.tolist() == [[2, 0], [7, 0], [4, 0]] and test.history.tolist() == [[4, 5]]
    # a window of the last 2 records keeps only them
    train2, _, test2, start2 = tallrec.records(user, item, rating, time, history=2, window=2)
    assert torch.cat([train2.target, test2.target]).tolist() == [4, 5] and start2 == 4.0


def test_runs_end_to_end_on_tiny_files(tmp_path):
    root = write_ml100k(tmp_path / "ml", log_rows(num_users=40, num_items=60), num_users=40, num_items=60)
    (root / "u.genre").write_text("".join(f"G{g}|{g}\n" for g in range(19)))
    out = tmp_path / "t.md"
    result = tallrec.main(["--root", str(root), "--encoder", "hashing", "--cache_dir", str(tmp_path / "c"),
                           "--seeds", "0", "1", "--samples", "16", "--steps", "20", "--pretrain_steps", "2",
                           "--window", "100", "--out", str(out)])
    assert result["records"] == {"train": 80, "val": 10, "test": 10}
    trained = [r for r in result["runs"] if r["n"] == 16]
    assert {(r["init"], r["seed"]) for r in trained} == {(i, s) for i in ("scratch", "pretrained") for s in (0, 1)}
    assert all(0.0 <= r["test_auc"] <= 1.0 and r["step"] % 10 == 0 for r in trained)
    text = out.read_text()
    assert "| TALLRec, LLaMA-7B + LoRA (published) |  | 67.24 |" in text
    assert "| text-sequence backbone, pretrained (measured) |" in text
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["args"]["samples"] == [16] and saved["command"].startswith("python benchmarks/tallrec_anchor.py")
    untrained = [r["test_auc"] for r in result["runs"] if r["n"] == 0]  # the N = 0 column: before any label
    assert len(untrained) == 2 and "| N = 0 | N = 16 |" in text
    tallrec.main(["--render", str(out.with_suffix(".json")), "--out", str(tmp_path / "again.md")])
    assert (tmp_path / "again.md").read_text() == text  # the page again from the saved run
