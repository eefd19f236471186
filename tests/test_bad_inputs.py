"""A table of bad non-data inputs through the real command (``metarec_pl.cli.main`` in this process): each ends
with exit code 2 and ONE line ``metarec: error: ...`` naming what is wrong, no traceback, and nothing written in
the scratch folder (its listing is the same before and after).  The data layer's own cases are elsewhere."""

import os
import subprocess
import sys

import pytest
import torch
import yaml

from _cli_helpers import ROOT, listing, run

CONFIG = {
    "seed_everything": 0,
    "trainer": {"max_steps": 1, "limit_val_batches": 1, "limit_test_batches": 1, "limit_predict_batches": 1,
                "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False,
                "default_root_dir": "runs",  # with the default CSV logger: a failed run must remove its version_N
                "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                               "init_args": {"dirpath": "runs/checkpoints", "save_last": True}}]},
    "model": {"algorithm": "maml", "network": "melu", "adapt": ["head.*"], "inner_steps": 1,
              "network_args": {"embedding_dim": 8, "hidden": [16]}},
    "data": {"dataset": "synthetic", "dataset_args": {"num_users": 80, "num_items": 60, "min_ratings": 15,
                                                      "max_ratings": 30},
             "sampler_args": {"query_size": 5, "min_support": 3}, "tasks_per_batch": 8},
}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The scratch folder: cfg.yaml, a few broken config files, and a trained checkpoint (with broken copies)."""
    work = tmp_path_factory.mktemp("bad_inputs")
    (work / "cfg.yaml").write_text(yaml.safe_dump(CONFIG))
    (work / "broken.yaml").write_text("model: {algorithm: [maml\n")
    (work / "list.yaml").write_text("- 1\n- 2\n")
    (work / "unknown.yaml").write_text("colour: blue\n")
    (work / "a_folder").mkdir()
    trained = dict(CONFIG, trainer={**CONFIG["trainer"], "logger": False, "default_root_dir": "trained",
                                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                                   "init_args": {"dirpath": "trained", "save_last": True}}]})
    (work / "trained.yaml").write_text(yaml.safe_dump(trained))
    fit = run(["fit", "--config", "trained.yaml"], cwd=work)
    assert fit.code == 0, fit.err[-3000:]
    ckpt = work / "trained/last.ckpt"
    data = ckpt.read_bytes()
    (work / "truncated.ckpt").write_bytes(data[: len(data) // 3])
    (work / "text.ckpt").write_text("user,item,rating\n1,2,3\n")
    torch.save({"epoch": 0}, work / "nostate.ckpt")
    loaded = torch.load(ckpt, weights_only=True)
    other = {**loaded, "state_dict": dict(loaded["state_dict"])}
    other.pop("hyper_parameters"), other.pop("datamodule_hyper_parameters")
    other["state_dict"]["network.head.0.weight"] = torch.zeros(2, 2)
    torch.save(other, work / "othershape.ckpt")
    loaded["hyper_parameters"]["data_info"]["schema"][0]["size"] += 3
    torch.save(loaded, work / "otherdata.ckpt")
    (work / "monitor.yaml").write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": "runs/checkpoints", "monitor": "val/maee"}}]}}))
    (work / "used.yaml").write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"dirpath": "trained"}}]}}))
    return work


def fit(*args):
    return ["fit", "--config", "cfg.yaml", *args]


def ckpt(subcommand, path, *args):
    return [subcommand, "--config", "cfg.yaml", "--ckpt_path", path, *args]


# (case id, argv, words the error line must hold)
PARSE = [
    ("unknown-model-option", fit("--model.foo", "1"), ["--model.foo"]),
    ("unknown-data-option", fit("--data.foo", "1"), ["--data.foo"]),
    ("unknown-trainer-option", fit("--trainer.foo", "1"), ["--trainer.foo"]),
    ("unknown-recommend-option", fit("--recommend.foo", "1"), ["--recommend.foo"]),
    ("unknown-top-option", fit("--foo", "1"), ["--foo"]),
    ("inner_steps-word", fit("--model.inner_steps", "abc"), ["model.inner_steps", "abc"]),
    ("inner_lr-word", fit("--model.inner_lr", "fast"), ["model.inner_lr", "fast"]),
    ("first_order-word", fit("--model.first_order", "maybe"), ["model.first_order"]),
    ("eval_inner_steps-fraction", fit("--model.eval_inner_steps", "1.5"), ["model.eval_inner_steps"]),
    ("ndcg_k-word", fit("--model.ndcg_k", "x"), ["model.ndcg_k"]),
    ("top_k-words", fit("--model.top_k", "[a, b]"), ["model.top_k"]),
    ("like_threshold-word", fit("--model.like_threshold", "high"), ["model.like_threshold"]),
    ("vmap_chunk_size-word", fit("--model.vmap_chunk_size", "many"), ["model.vmap_chunk_size"]),
    ("tasks_per_batch-fraction", fit("--data.tasks_per_batch", "1.5"), ["data.tasks_per_batch"]),
    ("data-seed-word", fit("--data.seed", "x"), ["data.seed"]),
    ("max_epochs-word", fit("--trainer.max_epochs", "x"), ["trainer.max_epochs"]),
    ("max_steps-word", fit("--trainer.max_steps", "ten"), ["trainer.max_steps"]),
    ("seed_everything-word", fit("--seed_everything", "x"), ["seed_everything"]),
    ("precision-unknown", fit("--trainer.precision", "bad"), ["trainer.precision"]),
    ("optimizer-missing-class", fit("--model.optimizer", "torch.optim.Nope"), ["model.optimizer"]),
    ("algorithm_args-not-mapping", fit("--model.algorithm_args", "5"), ["model.algorithm_args"]),
    ("network_args-list", fit("--model.network_args", "[1, 2]"), ["model.network_args"]),
    ("dataset_args-word", fit("--data.dataset_args", "x"), ["data.dataset_args"]),
    ("sampler_args-list", fit("--data.sampler_args", "[1, 2]"), ["data.sampler_args"]),
    ("resample_splits-word", fit("--data.resample_splits", "maybe"), ["data.resample_splits"]),
    ("progress_bar-word", fit("--trainer.enable_progress_bar", "maybe"), ["trainer.enable_progress_bar"]),
    ("config-missing", fit("--config", "nope.yaml"), ["config", "nope.yaml"]),
    ("config-folder", fit("--config", "a_folder"), ["config"]),
    ("config-broken-yaml", fit("--config", "broken.yaml"), ["config"]),
    ("config-a-list", fit("--config", "list.yaml"), ["config"]),
    ("config-unknown-key", fit("--config", "unknown.yaml"), ["colour"]),
    ("subcommand-unknown", ["fitt", "--config", "cfg.yaml"], ["fitt"]),
    ("callback-class-missing", fit("--trainer.callbacks", "nope.Callback"), ["trainer.callbacks"]),
    ("logger-class-missing", fit("--trainer.logger", "nope.Logger"), ["trainer.logger"]),
    ("recommend-top_k-word", fit("--recommend.top_k", "x"), ["recommend.top_k"]),
    ("overwrite-word", fit("--overwrite_checkpoints", "maybe"), ["overwrite_checkpoints"]),
]

MODEL = [
    ("top_k-zero", fit("--model.top_k", "[0]"), ["model.top_k", "[0]", ">= 1"]),
    ("top_k-negative", fit("--model.top_k", "[-1]"), ["model.top_k", ">= 1"]),
    ("top_k-one-zero", fit("--model.top_k", "[5, 0]"), ["model.top_k", "[5, 0]"]),
    ("ndcg_k-zero", fit("--model.ndcg_k", "[0]"), ["model.ndcg_k", "[0]"]),
    ("ndcg_k-negative", fit("--model.ndcg_k", "[-3]"), ["model.ndcg_k"]),
    ("inner_steps-negative", fit("--model.inner_steps", "-1"), ["model.inner_steps", "-1", ">= 0"]),
    ("eval_inner_steps-negative", fit("--model.eval_inner_steps", "-1"), ["model.eval_inner_steps", "-1"]),
    ("vmap_chunk_size-zero", fit("--model.vmap_chunk_size", "0"), ["model.vmap_chunk_size", "0"]),
    ("vmap_chunk_size-negative", fit("--model.vmap_chunk_size", "-2"), ["model.vmap_chunk_size"]),
    ("inner_lr-negative", fit("--model.inner_lr", "-0.1"), ["model.inner_lr", "-0.1"]),
    ("inner_lr-nan", fit("--model.inner_lr", "nan"), ["model.inner_lr", "nan"]),
    ("inner_lr-inf", fit("--model.inner_lr", "inf"), ["model.inner_lr", "inf"]),
    ("like_threshold-nan", fit("--model.like_threshold", "nan"), ["model.like_threshold"]),
    ("on_divergence-unknown", fit("--model.on_divergence", "maybe"), ["model.on_divergence", "'maybe'", "raise, skip"]),
    ("on_divergence-capitals", fit("--model.on_divergence", "RAISE"), ["model.on_divergence", "'RAISE'"]),
    ("on_divergence-empty", fit("--model.on_divergence", ""), ["model.on_divergence"]),
    ("adapt-matches-nothing", fit("--model.adapt", "['nothing.*']"), ["model.adapt", "nothing.*", "match no"]),
    ("adapt-lora-without-lora", fit("--model.adapt", "['*lora*']"), ["model.adapt", "*lora*"]),
    ("adapt-reptile-nothing", fit("--model.algorithm", "reptile", "--model.adapt", "['zzz']"), ["model.adapt", "zzz"]),
    *[(f"algorithm_args-unknown-{a}", fit("--model.algorithm", a, "--model.adapt", "null",
                                          "--model.algorithm_args", "{foo: 1}"),
       ["model.algorithm_args", "'foo'", f"'{a}'"])
      for a in ("maml", "fomaml", "metasgd", "reptile", "anil", "none", "protonet", "matchingnet", "bias",
                "mf-foldin", "popularity", "melu", "finetune")],
    ("algorithm_args-reserved", fit("--model.algorithm_args", "{inner_steps: 3}"),
     ["model.algorithm_args", "inner_steps", "model.inner_steps"]),
    ("network_args-unknown-melu", fit("--model.network_args", "{foo: 1}"), ["model.network_args", "'foo'", "'melu'"]),
    ("network_args-unknown-mlp", fit("--model.network", "mlp", "--model.adapt", "null", "--model.network_args",
                                     "{embedding_dim: 4}"), ["model.network_args", "'embedding_dim'", "'mlp'"]),
    ("network_args-reserved-schema", fit("--model.network_args", "{schema: []}"), ["model.network_args", "schema"]),
    ("network_args-id_dropout", fit("--model.network_args", "{id_dropout: 1.5}"), ["id_dropout", "1.5"]),
    ("matchingnet-temperature", fit("--model.algorithm", "matchingnet", "--model.adapt", "null",
                                    "--model.inner_steps", "null", "--model.algorithm_args", "{temperature: 0}"), ["temperature"]),
    ("matchingnet-inner-steps", fit("--model.algorithm", "matchingnet", "--model.adapt", "null"),
     ["model.inner_steps", "algorithm 'matchingnet' has no inner loop", "left out"]),
    ("algorithm-unknown", fit("--model.algorithm", "mamll"), ["unknown algorithm 'mamll'", "maml"]),
    ("network-unknown", fit("--model.network", "mellu"), ["mellu", "melu"]),
]

DATA_OPTIONS = [
    ("dataset-unknown", fit("--data.dataset", "synthetik"), ["synthetik"]),
    ("sampler-unknown", fit("--data.sampler", "users"), ["'users'"]),
    ("dataset_args-unknown", fit("--data.dataset_args", "{foo: 1}"), ["data.dataset_args", "'foo'", "synthetic"]),
    ("dataset_args-root", fit("--data.dataset_args", "{root: x}"), ["data.dataset_args", "data.root"]),
    ("sampler_args-unknown", fit("--data.sampler_args", "{foo: 1}"), ["data.sampler_args", "'foo'", "query_size"]),
    ("item-sampler_args-unknown", fit("--data.sampler", "item", "--data.sampler_args", "{users: 1}"),
     ["data.sampler_args", "'users'"]),
    ("query_size-zero", fit("--data.sampler_args", "{query_size: 0}"), ["query_size"]),
    ("min_support-zero", fit("--data.sampler_args", "{min_support: 0}"), ["min_support"]),
    ("max_support-zero", fit("--data.sampler_args", "{max_support: 0}"), ["max_support"]),
    ("order-unknown", fit("--data.sampler_args", "{order: sideways}"), ["order", "sideways"]),
    ("tasks_per_batch-zero", fit("--data.tasks_per_batch", "0"), ["data.tasks_per_batch", "0", ">= 1"]),
    ("tasks_per_batch-negative", fit("--data.tasks_per_batch", "-4"), ["data.tasks_per_batch", "-4"]),
    ("eval_tasks_per_batch-zero", fit("--data.eval_tasks_per_batch", "0"), ["data.eval_tasks_per_batch"]),
    ("num_workers-negative", fit("--data.num_workers", "-1"), ["data.num_workers", "-1"]),
    ("candidates-negative", fit("--data.candidates", "-3"), ["data.candidates", "-3"]),
]

TRAINER = [
    ("accelerator-gpu", fit("--trainer.accelerator", "gpu"), ["gpu"]),
    ("accelerator-tpu", fit("--trainer.accelerator", "tpu"), ["trainer", "torch_xla"]),
    ("strategy-unknown", fit("--trainer.strategy", "nonsense"), ["trainer", "nonsense"]),
    ("devices-zero", fit("--trainer.devices", "0"), ["trainer", "devices"]),
    ("max_epochs-negative", fit("--trainer.max_epochs", "-5"), ["trainer", "max_epochs", "-5"]),
    ("limit_val_batches-negative", fit("--trainer.limit_val_batches", "-1"), ["trainer", "limit_val_batches"]),
    # these fail while the run goes on (after the logger made its folder): the folder must be gone afterwards
    ("monitor-unknown-key", fit("--config", "monitor.yaml", "--trainer.max_steps", "2", "--trainer.val_check_interval",
                                "1"), ["val/maee"]),
    ("inner-loop-diverges", fit("--model.inner_steps", "5", "--model.inner_lr", "1e20"),
     ["diverged", "model.inner_lr"]),
    ("every-task-skipped", fit("--model.inner_steps", "5", "--model.inner_lr", "1e20", "--model.on_divergence", "skip",
                               "--trainer.num_sanity_val_steps", "1"),
     ["every val task", "skipped", "model.inner_lr"]),
    ("checkpoint-folder-in-use", fit("--config", "used.yaml"),
     ["trained", "already holds checkpoints", "last.ckpt", "--overwrite_checkpoints"]),
]

CHECKPOINTS = [
    *[(f"{sub}-{kind}", ckpt(sub, path), [path, words])
      for sub in ("test", "validate", "predict")
      for kind, path, words in [("missing", "no-such.ckpt", "does not exist"),
                                ("folder", "trained", "is a folder"),
                                ("truncated", "truncated.ckpt", "not a readable checkpoint"),
                                ("text", "text.ckpt", "not a readable checkpoint"),
                                ("no-state-dict", "nostate.ckpt", "not a Lightning checkpoint"),
                                ("other-shape", "othershape.ckpt", "'network.head.0.weight' has shape [2, 2]"),
                                ("other-data", "otherdata.ckpt", "was trained on other data")]],
    *[(f"test-conflict-{option}", ckpt("test", "trained/last.ckpt", f"--model.{option}", value),
       [f"model.{option}", theirs])
      for option, value, theirs in [("algorithm", "reptile", "'maml'"), ("network", "mlp", "'melu'"),
                                    ("adapt", "['*']", "['head.*']"),
                                    ("network_args", "{embedding_dim: 4, hidden: [16]}", "'embedding_dim': 8")]],
    ("predict-conflict-algorithm", ckpt("predict", "trained/last.ckpt", "--model.algorithm", "metasgd"),
     ["model.algorithm", "'metasgd'", "'maml'"]),
    ("test-last-without-checkpoints", ckpt("test", "last"), ["ckpt_path", "'last'"]),
    ("predict-output-folder", ckpt("predict", "trained/last.ckpt", "--recommend.output", "a_folder"),
     ["recommend.output", "a_folder", "folder"]),
    ("predict-top_k-zero", ckpt("predict", "trained/last.ckpt", "--recommend.top_k", "0"), ["recommend.top_k"]),
]

CASES = PARSE + MODEL + DATA_OPTIONS + TRAINER + CHECKPOINTS


def test_the_table_is_large_enough():
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(work, argv, words):
    before = listing(work)
    out = run(argv, cwd=work)
    assert out.code == 2, (out.code, out.err[-3000:])
    assert len(out.error_lines) == 1, out.err[-3000:]
    line = out.error_lines[0]
    assert all(w in line for w in words), line
    assert "Traceback" not in out.err and "Traceback" not in out.out
    assert listing(work) == before


def test_wandb_online_without_a_login_is_one_line(work, tmp_path, monkeypatch):
    """No API key, no netrc (HOME is empty), WANDB_MODE=online: refused before W&B starts; the base URL points at a
    closed local port so that even a failing check could not reach the network."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_CONFIG_DIR", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    before = listing(work)
    out = run(fit("--config", str(ROOT / "configs/wandb.yaml"), "--trainer.logger.init_args.save_dir", "wb"), cwd=work)
    assert out.code == 2 and len(out.error_lines) == 1, out.err[-3000:]
    assert "wandb login" in out.error_lines[0] and "WANDB_MODE=offline" in out.error_lines[0]
    assert listing(work) == before


def test_wandb_login_detection():
    from metarec_pl.tracking import wandb_login_problem

    empty = {"HOME": "/nonexistent"}
    assert wandb_login_problem({}, empty) is not None
    assert wandb_login_problem({}, {**empty, "WANDB_API_KEY": "x" * 40}) is None
    assert wandb_login_problem({}, {**empty, "WANDB_MODE": "offline"}) is None
    assert wandb_login_problem({}, {**empty, "WANDB_MODE": "disabled"}) is None
    assert wandb_login_problem({"offline": True}, empty) is None
    assert wandb_login_problem({}, {**empty, "WANDB_MODE": "online"}) is not None


def test_wandb_login_detection_reads_netrc(tmp_path):
    from metarec_pl.tracking import wandb_login_problem

    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_login_problem({}, {"HOME": str(tmp_path)}) is None
    assert wandb_login_problem({}, {"HOME": str(tmp_path), "WANDB_BASE_URL": "https://wandb.example.com"}) is not None


@pytest.mark.parametrize("argv, words", [
    (fit("--model.top_k", "[0]"), ["model.top_k"]),
    (ckpt("test", "truncated.ckpt"), ["truncated.ckpt", "not a readable checkpoint"]),
], ids=["top_k-zero", "truncated-checkpoint"])
def test_a_real_process_exits_with_code_2(work, argv, words):
    before = listing(work)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    out = subprocess.run([sys.executable, "-m", "metarec_pl.cli", *argv], cwd=work, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("metarec: error:")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), out.stderr[-3000:]
    assert "Traceback" not in out.stderr and listing(work) == before
