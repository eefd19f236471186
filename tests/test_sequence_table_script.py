"""benchmarks/sequence_table.py on tiny generated ML-100K files (hashing encoder): it runs end to end, writes its
table and raw numbers, and its ranking metrics are right on hand-made scores."""

import json
import math

import pytest
import torch

from _datasets_fixtures import write_ml100k
from _scripts import load_script
from test_sequential_protocol import log_rows

sequence_memory = load_script("sequence_memory")
sequence_table = load_script("sequence_table")


def test_rank_metrics_with_ties_average_over_orders():
    scores = torch.tensor([0.0, 5.0, 3.0, 3.0, 1.0])
    m = sequence_table.rank_metrics(scores, 2, torch.tensor([1, 2, 3, 4]))  # one above, one tie: rank 1 or 2
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 2)
    assert m["hr@10"] == 1.0
    flat = sequence_table.rank_metrics(torch.zeros(30), 0, torch.arange(30))  # constant scores: chance level
    assert flat["hr@10"] == pytest.approx(10 / 30)


ROWS = {"popularity", "SASRec (id, unadapted)", "SASRec (id) + fine-tuned", "backbone (unadapted)",
        "backbone + prompt fine-tuned", "backbone + prompt from scratch", "MetaTL-style (text items)",
        "full-parameter MAML (backbone)", "meta prompt (zero-shot)", "meta prompt (Meta-SGD)",
        "maml (MeLU network, fields + text)", "melu (MeLU-5, fields + text)", "tanp (MeLU network, fields + text)"}


def test_runs_end_to_end_on_tiny_files(tmp_path, monkeypatch):
    root = write_ml100k(tmp_path / "ml", log_rows(num_users=60, num_items=150), num_users=60, num_items=150)
    (root / "u.genre").write_text("".join(f"G{g}|{g}\n" for g in range(19)))
    drawn = []  # every evaluation batch: (tasks, batch)
    real_batch = sequence_table.sequence_batch

    def spy(tasks, *args, **kw):
        batch = real_batch(tasks, *args, **kw)
        if kw.get("exclude") is not None and args[1:3] == (4, 100):
            drawn.append((tasks, batch))
        return batch

    monkeypatch.setattr(sequence_table, "sequence_batch", spy)
    out = tmp_path / "table.md"
    results = sequence_table.main([
        "--root", str(root), "--encoder", "hashing", "--cache_dir", str(tmp_path / "c"), "--steps", "2",
        "--meta_steps", "2", "--maml_steps", "2", "--eval_every", "2", "--tasks_per_batch", "4", "--dim", "8",
        "--k", "3", "--finetune_steps", "1", "--finetune_lrs", "0.1", "1.0", "--out", str(out)])
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["results"][0]["rows"].keys() == results[0]["rows"].keys() == ROWS
    assert results[0]["finetune"]["lr"] in (0.1, 1.0) and set(results[0]["finetune"]["val"]) == {0.1, 1.0}
    assert results[0]["maml_adapted_per_user"] == results[0]["backbone_params"] > results[0]["adapted_per_user"]
    for row in results[0]["rows"].values():
        for key in ("full/hr@10", "full/ndcg@10", "full/mrr", "sampled/hr@10", "sampled/ndcg@10", "sampled/mrr"):
            assert 0.0 <= row[key] <= 1.0
        assert row["sampled/hr@10"] >= row["full/hr@10"]  # 100 negatives are never harder than the catalogue
    # evaluation: support negatives avoid the support only (so they may be items the user rates later: the
    # future is unknown when adapting), the query's 100 negatives avoid the user's whole history
    history = sequence_table.user_sequences(*_data_and_rows(root))
    later_drawn = 0
    for tasks, batch in drawn:
        s, q = batch.support, batch.query
        for i, task in enumerate(tasks):
            support_neg = set(s.features["seq_item"][i][(s.rating[i] == 0) & (s.mask[i] > 0)].tolist())
            query_neg = set(q.features["seq_item"][i][(q.rating[i] == 0) & (q.mask[i] > 0)].tolist())
            assert not support_neg & set(task.support.tolist())
            assert not query_neg & set(history[task.user].tolist())
            later_drawn += len(support_neg & set(history[task.user].tolist()))
    assert drawn and later_drawn > 0
    text = out.read_text()
    assert "| meta prompt (Meta-SGD) |" in text and "adapted per user" in text
    png = tmp_path / "k.png"
    sequence_table.main(["--render", str(out.with_suffix(".json")), "--out", str(tmp_path / "r.md"), "--plot",
                         str(png)])
    rendered = (tmp_path / "r.md").read_text()
    assert "### K = 3 (seeds [0]" in rendered and "| meta prompt (Meta-SGD) | " in rendered.split("versus K")[1]
    seed_rows = rendered.split("NDCG@10 per seed (K = 3)")[1].split("###")[0]
    ndcg = {n: r["full/ndcg@10"] for n, r in results[0]["rows"].items()}
    above = int(ndcg["meta prompt (Meta-SGD)"] > ndcg["popularity"])
    assert f"| popularity | {ndcg['popularity']:.4f} | {above}/1 |" in seed_rows
    pytest.importorskip("matplotlib")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _data_and_rows(root):
    data = sequence_table.MovieLens100K(root=str(root), protocol="sequential-cold", support_size=3, query_size=1,
                                        cache=False).load()
    return data, torch.arange(len(data.user))


def test_memory_script_compares_the_prompt_with_full_parameter_maml():
    prompt = sequence_memory.one("prompt", users=3, k=2, steps=1, lora_rank=1)
    full = sequence_memory.one("full", users=3, k=2, steps=1, lora_rank=0)
    assert prompt["adapted_per_user"] == 4 * 64 + 1 * 2 * 2 * (64 + 64)
    assert full["adapted_per_user"] == full["backbone_params"]
    assert prompt["peak_mib"] >= prompt["peak_before_mib"] > 0


def _raw(path, k, seeds_rows):
    results = [{"seed": seed, "test_users": 5, "val_users": 5,
                "rows": {name: {**{f"{kind}/{m}": v for kind in ("full", "sampled") for m in sequence_table.METRICS},
                                "fit_s": 1.0} for name, v in rows.items()}} for seed, rows in seeds_rows.items()]
    path.write_text(json.dumps({"args": {"k": k}, "results": results}))
    return str(path)


def test_render_merges_the_rows_of_runs_of_the_same_k_and_seed(tmp_path):
    main = _raw(tmp_path / "main.json", 3, {0: {"popularity": 0.05, "meta prompt (Meta-SGD)": 0.12},
                                            1: {"popularity": 0.06, "meta prompt (Meta-SGD)": 0.10}})
    extra = _raw(tmp_path / "extra.json", 3, {0: {"popularity": 0.99, "maml (fields)": 0.20}})  # seed 0 only
    by_k = sequence_table.merged([main, extra])
    assert [r["seed"] for r in by_k[3]] == [0, 1]
    assert by_k[3][0]["rows"]["popularity"]["full/ndcg@10"] == 0.05  # a row in both files: the first file's
    assert "maml (fields)" in by_k[3][0]["rows"] and "maml (fields)" not in by_k[3][1]["rows"]
    text = sequence_table.render([main, extra], tmp_path / "r.md")
    assert "| maml (fields) (1 seeds) | 0.2000 |" in text  # mean over the seeds that ran it, their count shown
    seed_rows = text.split("NDCG@10 per seed (K = 3)")[1].split("###")[0]
    assert "| maml (fields) | 0.2000 |  | 0/1 |" in seed_rows  # compared on the seed both ran: 0.12 < 0.20
    assert "| popularity | 0.0500 | 0.0600 | 2/2 |" in seed_rows
    assert seed_rows.strip().splitlines()[-1].startswith("| meta prompt (Meta-SGD) |")  # the main row last
    assert [r["seed"] for r in sequence_table.merged([main, extra], seeds=[1])[3]] == [1]
    if sequence_table.plot(sequence_table.merged([main, extra]), tmp_path / "k.png"):  # rows some seeds lack
        assert (tmp_path / "k.png").read_bytes()[:4] == b"\x89PNG"


def test_baselines_only_refuses_the_row_that_needs_the_backbone():
    with pytest.raises(SystemExit, match="--baselines_only cannot run the maml row"):
        sequence_table.main(["--baselines_only", "--baselines", "maml", "fields"])


def test_item_texts_are_title_then_genre_names(tmp_path):
    root = write_ml100k(tmp_path / "ml", log_rows(num_users=8, num_items=20), num_users=8, num_items=20)
    (root / "u.genre").write_text("".join(f"G{g}|{g}\n" for g in range(19)))
    data, _ = _data_and_rows(root)
    texts = sequence_table.ml100k_item_texts(str(root), data)
    assert len(texts) == data.num_items
    assert texts[3] == "Movie 3 (1953). G2, G3"  # genres 3 and 3 * 7 % 19 = 2, in u.genre order
    assert texts[0] == ". "  # code 0: no movie


def test_scratch_prompt_restarts_only_the_prompt():
    net = sequence_table.TextSequenceNet([], item_vectors=torch.randn(20, 6), dim=8, prompt_len=2, lora_rank=1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)  # a "trained" network: every weight moved
    fresh = sequence_table.scratch_prompt(net, seed=0)
    before, after = dict(net.named_parameters()), dict(fresh.named_parameters())
    for name, p in after.items():
        if name == "encoder.prompt":
            assert p.abs().max() < 0.2 and not torch.equal(p, before[name])
        elif "lora_B" in name:
            assert (p == 0).all()
        else:
            assert torch.equal(p, before[name]), name
