"""Bad data inputs, table-driven: each is one line ``metarec: error: <what>, <where>, <expected>`` and exit code 2
through the CLI (``metarec_pl.cli.main`` in-process), or one ``DataError`` line through the Python API, and
none leaves a file in the folder it ran in besides its inputs.

Groups: log files and ``dataset_args`` (``metarec fit``), ``sampler_args`` and data-module options, other data
sets' files, predict files and output paths (``metarec predict`` on a checkpoint written by ``metarec fit``),
and ``Recommender`` arguments and checkpoints."""

import json
import os
import random
from pathlib import Path

import pytest
import torch
import yaml

from metarec_pl import cli
from metarec_pl.data.types import DataError
from metarec_pl.recommend import NewUser, Recommender


def _log(users: int = 30, per: int = 12, items: int = 30, seed: int = 0) -> str:
    rng = random.Random(seed)
    rows = [f"u{u},{i},{1 + (u + i) % 5}" for u in range(users) for i in rng.sample(range(1, items + 1), per)]
    return "user,item,rating\n" + "\n".join(rows) + "\n"


LOG = _log()
FIRST = LOG.splitlines()[1]  # "u0,<item>,<rating>"
USERS = "id,group\n" + "".join(f"u{u},{'ab'[u % 2]}\n" for u in range(30))


def fit_args(dataset_args: dict, *extra: str, dataset: str = "interactions") -> list[str]:
    return ["fit", "--data.dataset", dataset, "--data.root", ".", "--data.dataset_args", json.dumps(dataset_args),
            "--data.sampler_args", json.dumps({"query_size": 4, "min_support": 2}),
            "--model.network", "mlp", "--model.algorithm", "bias", "--trainer.max_epochs", "1",
            "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
            "--trainer.enable_progress_bar", "false", *extra]


LOG_ONLY = {"log.csv": LOG}
# (id, files written in the scratch folder, argv, words the error line must contain)
FIT_CASES = [
    ("log-missing", {}, fit_args({"path": "log.csv"}), ["log.csv", "file not found"]),
    ("log-empty", {"log.csv": ""}, fit_args({"path": "log.csv"}), ["log.csv", "empty"]),
    ("log-header-only", {"log.csv": "user,item,rating\n"}, fit_args({"path": "log.csv"}), ["log.csv", "no rows"]),
    ("log-wrong-separator", {"log.csv": LOG.replace(",", ";")}, fit_args({"path": "log.csv"}),
     ["single column", "sep"]),
    ("log-no-rating-column", {"log.csv": LOG.replace("rating", "score", 1)}, fit_args({"path": "log.csv"}),
     ["column 'rating'", "not found"]),
    ("rating-not-a-number", {"log.csv": LOG + "u1,999,five\n"}, fit_args({"path": "log.csv"}),
     ["'five'", "not a finite number", "line"]),
    ("rating-inf", {"log.csv": LOG + "u1,999,inf\n"}, fit_args({"path": "log.csv"}), ["'inf'", "finite"]),
    ("empty-user-id", {"log.csv": LOG + " ,7,3\n"}, fit_args({"path": "log.csv"}), ["empty user id", "line"]),
    ("empty-item-id", {"log.csv": LOG + "u1,  ,3\n"}, fit_args({"path": "log.csv"}), ["empty item id", "line"]),
    ("duplicate-pair", {"log.csv": LOG + FIRST + "\n"}, fit_args({"path": "log.csv"}),
     ["duplicate row", "duplicates: last"]),
    ("duplicate-pair-with-spaces", {"log.csv": LOG + " " + FIRST.replace(",", " , ") + "\n"},
     fit_args({"path": "log.csv"}), ["duplicate row", "'u0'"]),
    ("rating-outside-range", {"log.csv": LOG}, fit_args({"path": "log.csv", "rating_range": [1, 4]}),
     ["outside the rating range [1, 4]"]),
    ("ragged-line", {"log.csv": LOG + "u1,3,4,extra\n"}, fit_args({"path": "log.csv"}), ["same number of fields"]),
    ("nul-byte", {"log.csv": LOG + "u1,3\x00,4\n"}, fit_args({"path": "log.csv"}), ["NUL byte", "line"]),
    ("not-utf8", {"log.csv": LOG.encode() + b"u1,\xff\xfe,4\n"}, fit_args({"path": "log.csv"}),
     ["not valid utf-8", "line"]),
    ("bad-time", {"log.csv": "user,item,rating,t\nu0,1,4,100\nu0,2,3,soon\n"},
     fit_args({"path": "log.csv", "columns": {"time": "t"}}), ["'soon'", "timestamp"]),
    ("unknown-column-role", LOG_ONLY, fit_args({"path": "log.csv", "columns": {"score": "rating"}}),
     ["unknown role", "score"]),
    ("duplicates-policy", LOG_ONLY, fit_args({"path": "log.csv", "duplicates": "maybe"}),
     ["duplicates", "'maybe'"]),
    ("negatives-four", LOG_ONLY, fit_args({"path": "log.csv", "implicit": True, "negatives": "four"}),
     ["data.dataset_args.negatives", "'four'", "int"]),
    ("negatives-negative", LOG_ONLY, fit_args({"path": "log.csv", "implicit": True, "negatives": -1}),
     ["negatives must be >= 0"]),
    ("header-not-bool", LOG_ONLY, fit_args({"path": "log.csv", "header": "sometimes"}),
     ["data.dataset_args.header", "'sometimes'", "bool"]),
    ("rating-range-text", LOG_ONLY, fit_args({"path": "log.csv", "rating_range": "1-5"}),
     ["data.dataset_args.rating_range", "'1-5'"]),
    ("columns-not-a-mapping", LOG_ONLY, fit_args({"path": "log.csv", "columns": "user"}),
     ["data.dataset_args.columns", "'user'"]),
    ("unknown-option", LOG_ONLY, fit_args({"path": "log.csv", "pth": "x"}), ["data.dataset_args", "unknown", "'pth'"]),
    ("unknown-protocol", LOG_ONLY, fit_args({"path": "log.csv", "protocol": "nope"}), ["unknown protocol", "'nope'"]),
    ("format-unknown", LOG_ONLY, fit_args({"path": "log.csv", "format": "xlsx"}), ["format must be", "'xlsx'"]),
    ("not-parquet", {"log.parquet": LOG}, fit_args({"path": "log.parquet"}), ["log.parquet", "Parquet"]),
    ("features-without-path", LOG_ONLY, fit_args({"path": "log.csv", "user_features": {"id": "id"}}),
     ["user_features needs 'path'"]),
    ("feature-table-missing", LOG_ONLY,
     fit_args({"path": "log.csv", "user_features": {"path": "users.csv", "id": "id", "fields": {"group": "categorical"}}}),
     ["users.csv", "file not found"]),
    ("feature-table-lacks-a-user", {"log.csv": LOG, "users.csv": USERS.replace("u7,", "u77,")},
     fit_args({"path": "log.csv", "user_features": {"path": "users.csv", "id": "id", "fields": {"group": "categorical"}}}),
     ["'u7' has no row in users.csv"]),
    ("feature-table-duplicate-id", {"log.csv": LOG, "users.csv": USERS + "u3,b\n"},
     fit_args({"path": "log.csv", "user_features": {"path": "users.csv", "id": "id", "fields": {"group": "categorical"}}}),
     ["user id 'u3' appears twice"]),
    ("feature-kind-unknown", {"log.csv": LOG, "users.csv": USERS},
     fit_args({"path": "log.csv", "user_features": {"path": "users.csv", "id": "id", "fields": {"group": "weird"}}}),
     ["kind must be categorical, multi or dense", "'weird'"]),
    ("feature-table-unknown-key", {"log.csv": LOG, "users.csv": USERS},
     fit_args({"path": "log.csv", "user_features": {"path": "users.csv", "id": "id", "colour": 1}}),
     ["unknown key", "colour"]),
    ("dense-feature-not-a-number", {"log.csv": LOG, "users.csv": USERS},
     fit_args({"path": "log.csv", "user_features": {"path": "users.csv", "id": "id", "fields": {"group": "dense"}}}),
     ["'a'", "not a finite number"]),
    ("no-data-folder", LOG_ONLY, [a for a in fit_args({"path": "log.csv"}) if a not in ("--data.root", ".")],
     ["no data folder given", "--data.root"]),
    ("query-size-zero", LOG_ONLY, fit_args({"path": "log.csv"}, "--data.sampler_args", '{"query_size": 0}'),
     ["query_size and min_support must be >= 1"]),
    ("min-support-negative", LOG_ONLY, fit_args({"path": "log.csv"}, "--data.sampler_args", '{"min_support": -2}'),
     ["must be >= 1"]),
    ("query-size-text", LOG_ONLY, fit_args({"path": "log.csv"}, "--data.sampler_args", '{"query_size": "five"}'),
     ["data.sampler_args.query_size", "'five'"]),
    ("sampler-unknown-option", LOG_ONLY, fit_args({"path": "log.csv"}, "--data.sampler_args", '{"querysize": 3}'),
     ["data.sampler_args", "unknown", "'querysize'"]),
    ("sampler-order", LOG_ONLY, fit_args({"path": "log.csv"}, "--data.sampler_args", '{"order": "sideways"}'),
     ["data.sampler_args.order", "'sideways'"]),
    ("max-support-zero", LOG_ONLY, fit_args({"path": "log.csv"}, "--data.sampler_args", '{"max_support": 0}'),
     ["max_support must be >= 1"]),
    ("id-features-a-string", LOG_ONLY, fit_args({"path": "log.csv"}, "--data.id_features", "item"),
     ["data.id_features", "item"]),
    ("drop-unknown-field", LOG_ONLY, fit_args({"path": "log.csv"}, "--data.drop_features", '["user_age"]'),
     ["drop_features", "'user_age'"]),
    ("ml1m-missing-files", {}, fit_args({}, dataset="movielens-1m"), ["ratings.dat", "file not found"]),
    ("ml1m-rating-nine", {"ratings.dat": "1::1::9::5\n", "users.dat": "1::F::1::10::48067\n",
                          "movies.dat": "1::Toy Story (1995)::Comedy\n"}, fit_args({}, dataset="movielens-1m"),
     ["ratings.dat: line 1", "outside the rating range"]),
    ("ml1m-unknown-user", {"ratings.dat": "2::1::4::5\n", "users.dat": "1::F::1::10::48067\n",
                           "movies.dat": "1::Toy Story (1995)::Comedy\n"}, fit_args({}, dataset="movielens-1m"),
     ["UserID", "is not in users.dat"]),
    ("ml100k-bad-user-line", {"u.data": "1\t1\t4\t5\n", "u.user": "1|24|M\n", "u.item": "1|x|||" + "|0" * 19 + "\n"},
     fit_args({}, dataset="movielens-100k"), ["u.user: line 1", "found 3 field(s)"]),
    ("synthetic-users-text", {}, fit_args({"num_users": "many"}, dataset="synthetic"),
     ["data.dataset_args.num_users", "'many'"]),
    ("synthetic-feature-share", {}, fit_args({"feature_share": 2.0}, dataset="synthetic"),
     ["feature_share must be in [0, 1]"]),
    ("candidates-zero", LOG_ONLY, fit_args({"path": "log.csv"}, "--data.candidates", "0"),
     ["data.candidates", "positive number"]),
]


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _write(folder: Path, files: dict) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is None:
            path.mkdir()
        else:
            path.write_text(content)


def _run_cli(argv: list[str], capsys) -> str:
    """The one error line of ``metarec <argv>``, checked: exit code 2, a single ``metarec: error:`` line, no
    traceback."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("metarec: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    return errors[0]


def _check(line: str, words: list[str]) -> None:
    for word in words:
        assert word.lower() in line.lower(), f"{word!r} not in {line!r}"


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("METAREC_PL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    return folder


@pytest.mark.parametrize("files, argv, words", [c[1:] for c in FIT_CASES], ids=[c[0] for c in FIT_CASES])
def test_bad_data_for_fit_is_one_line_and_leaves_nothing(scratch, capsys, files, argv, words):
    _write(scratch, files)
    before = _snapshot(scratch)
    _check(_run_cli(argv, capsys), words)
    assert _snapshot(scratch) == before


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint written by ``metarec fit`` (in-process) on a bare log; (predict config, checkpoint)."""
    folder = tmp_path_factory.mktemp("trained")
    (folder / "log.csv").write_text(LOG)
    base = {"model": {"algorithm": "bias", "network": "mlp"},
            "data": {"dataset": "interactions", "root": str(folder),
                     "dataset_args": {"path": "log.csv", "cache_dir": str(folder / "cache")},
                     "sampler_args": {"query_size": 4, "min_support": 2}}}
    fit = {**base, "trainer": {"max_epochs": 1, "logger": False, "enable_progress_bar": False,
                               "default_root_dir": str(folder),
                               "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                              "init_args": {"dirpath": str(folder / "ck"), "save_last": True}}]}}
    (folder / "fit.yaml").write_text(yaml.safe_dump(fit))
    predict = {**base, "trainer": {"logger": False, "enable_progress_bar": False}}
    (folder / "predict.yaml").write_text(yaml.safe_dump(predict))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        cli.main(["fit", "--config", "fit.yaml"])
    finally:
        os.chdir(cwd)
    return folder / "predict.yaml", folder / "ck" / "last.ckpt"


def predict_args(source: str = "new.csv", output: str = "recs.csv", *extra: str) -> list[str]:
    return ["--data.predict_file", source, "--recommend.output", output, *extra]


GOOD = "user,item,rating\nann,1,5\nann,2,3\n"
PREDICT_CASES = [
    ("unknown-item", {"new.csv": GOOD + "ann,31,4\n"}, predict_args(), ["new.csv: line 4", "item '31'",
                                                                       "not in the catalogue"]),
    ("item-zero-is-no-item", {"new.csv": GOOD + "ann,0,4\n"}, predict_args(), ["item '0'", "not in the catalogue"]),
    ("header-only", {"new.csv": "user,item,rating\n"}, predict_args(), ["new.csv", "no ratings after the header"]),
    ("empty-file", {"new.csv": ""}, predict_args(), ["new.csv", "empty"]),
    ("missing-rating-column", {"new.csv": "user,item\nann,1\n"}, predict_args(), ["line 1", "missing column",
                                                                                  "rating"]),
    ("extra-field-in-a-row", {"new.csv": GOOD + "ann,3,4,7\n"}, predict_args(), ["line 4", "4 fields",
                                                                                 "header names 3"]),
    ("missing-field-in-a-row", {"new.csv": GOOD + "ann,3\n"}, predict_args(), ["line 4", "2 fields"]),
    ("column-not-a-profile-field", {"new.csv": "user,item,rating,age\nann,1,5,3\n"}, predict_args(),
     ["line 1", "'age'", "not a profile field"]),
    ("repeated-column", {"new.csv": "user,item,rating,rating\nann,1,5,5\n"}, predict_args(), ["appears twice"]),
    ("rating-not-a-number", {"new.csv": GOOD + "ann,3,good\n"}, predict_args(), ["line 4", "'good'",
                                                                                 "not a number"]),
    ("rating-above-the-logs-scale", {"new.csv": GOOD + "ann,3,6\n"}, predict_args(),
     ["line 4", "rating 6", "[1, 5]"]),
    ("rating-below-the-logs-scale", {"new.csv": GOOD + "ann,3,0.5\n"}, predict_args(), ["rating 0.5", "[1, 5]"]),
    ("item-rated-twice", {"new.csv": GOOD + "ann, 1,4\n"}, predict_args(), ["item '1'", "more than once"]),
    ("empty-item-id", {"new.csv": GOOD + "ann,,4\n"}, predict_args(), ["line 4", "empty id"]),
    ("predict-file-missing", {}, predict_args(), ["data.predict_file", "does not exist"]),
    ("predict-file-a-folder", {"new.csv": None}, predict_args(), ["data.predict_file", "is a folder"]),
    ("predict-file-suffix", {"new.txt": GOOD}, predict_args("new.txt"), ["unknown format", ".csv or .json"]),
    ("json-invalid", {"new.json": "[{"}, predict_args("new.json"), ["new.json", "invalid JSON"]),
    ("json-not-a-list", {"new.json": '{"user": "ann"}'}, predict_args("new.json"), ["expected a list"]),
    ("json-no-ratings", {"new.json": '[{"user": "ann"}]'}, predict_args("new.json"), ["record 0", "'ratings'"]),
    ("json-item-null", {"new.json": '[{"user": "ann", "ratings": [[null, 4]]}]'}, predict_args("new.json"),
     ["record 0", "None", "not an id"]),
    ("json-unknown-key", {"new.json": '[{"user": "ann", "ratings": {"1": 4}, "age": 3}]'},
     predict_args("new.json"), ["unknown key 'age'"]),
    ("output-a-folder", {"new.csv": GOOD, "out": None}, predict_args("new.csv", "out"), ["recommend.output",
                                                                                         "is a folder"]),
    ("output-under-a-file", {"new.csv": GOOD, "file": "x"}, predict_args("new.csv", "file/recs.csv"),
     ["recommend.output", "is a file, not a folder"]),
    ("top-k-zero", {"new.csv": GOOD}, predict_args("new.csv", "recs.csv", "--recommend.top_k", "0"),
     ["recommend.top_k", ">= 1"]),
]


@pytest.mark.parametrize("files, args, words", [c[1:] for c in PREDICT_CASES], ids=[c[0] for c in PREDICT_CASES])
def test_bad_predict_input_is_one_line_and_leaves_nothing(trained, scratch, capsys, files, args, words):
    config, ckpt = trained
    _write(scratch, files)
    before = _snapshot(scratch)
    _check(_run_cli(["predict", "--config", str(config), "--ckpt_path", str(ckpt), *args], capsys), words)
    assert _snapshot(scratch) == before  # no recs.csv, no recs.csv.tmp, no lightning_logs


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_output_folder_is_one_line_and_leaves_no_tmp_file(trained, scratch, capsys):
    config, ckpt = trained
    _write(scratch, {"new.csv": GOOD, "locked": None})
    (scratch / "locked").chmod(0o500)
    try:
        line = _run_cli(["predict", "--config", str(config), "--ckpt_path", str(ckpt),
                         *predict_args("new.csv", "locked/recs.csv")], capsys)
        _check(line, ["recommend.output", "cannot be written"])
        assert list((scratch / "locked").iterdir()) == []
    finally:
        (scratch / "locked").chmod(0o700)


def test_the_good_predict_file_works_with_a_bom_and_spaces(trained, scratch, capsys):
    """The control: the same file without the faults writes recommendations (raw ids of the log)."""
    config, ckpt = trained
    _write(scratch, {"new.csv": "\ufeffuser , item,rating\n ann , 1 ,5\nann,2, 3\n"})
    cli.main(["predict", "--config", str(config), "--ckpt_path", str(ckpt), *predict_args()])
    lines = (scratch / "recs.csv").read_text().splitlines()
    assert lines[0] == "user,rank,item,score" and len(lines) == 11
    items = [line.split(",")[2] for line in lines[1:]]
    assert {line.split(",")[0] for line in lines[1:]} == {"ann"} and not {"1", "2"} & set(items)
    assert set(items) <= {str(i) for i in range(1, 31)}
    assert not [p.name for p in scratch.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def rec(trained):
    return Recommender.from_checkpoint(trained[1])


def _truncated(folder: Path, ckpt: Path) -> Path:
    data = ckpt.read_bytes()
    (folder / "cut.ckpt").write_bytes(data[: len(data) // 2])
    return folder / "cut.ckpt"


API_CASES = [
    ("ckpt-missing", lambda r, f, c: Recommender.from_checkpoint(f / "none.ckpt"), ["none.ckpt", "does not exist"]),
    ("ckpt-a-folder", lambda r, f, c: Recommender.from_checkpoint(f), ["is a folder", ".ckpt"]),
    ("ckpt-truncated", lambda r, f, c: Recommender.from_checkpoint(_truncated(f, c)),
     ["cut.ckpt", "not a readable checkpoint"]),
    ("ckpt-a-text-file", lambda r, f, c: (f / "x.ckpt").write_text("hello") and Recommender.from_checkpoint(f / "x.ckpt"),
     ["x.ckpt", "not a readable checkpoint"]),
    ("ckpt-a-plain-tensor-file", lambda r, f, c: torch.save({"a": 1}, f / "t.ckpt") or Recommender.from_checkpoint(
        f / "t.ckpt"), ["t.ckpt", "no model weights"]),
    ("ckpt-none", lambda r, f, c: Recommender.from_checkpoint(None), ["checkpoint None is not a path"]),
    ("config-missing", lambda r, f, c: Recommender.from_checkpoint(c, f / "nope.yaml"), ["nope.yaml",
                                                                                         "does not exist"]),
    ("config-without-data", lambda r, f, c: (f / "c.yaml").write_text("model: {}\n") and Recommender.from_checkpoint(
        c, f / "c.yaml"), ["no 'data:' section"]),
    ("data-of-a-wrong-type", lambda r, f, c: Recommender.from_checkpoint(c, 42), ["data=int"]),
    ("k-zero", lambda r, f, c: r.recommend({"1": 5}, k=0), ["k=0", ">= 1"]),
    ("k-text", lambda r, f, c: r.recommend({"1": 5}, k="3"), ["k='3'"]),
    ("ratings-none", lambda r, f, c: r.recommend(None), ["ratings None", "neither a mapping nor a list"]),
    ("ratings-a-string", lambda r, f, c: r.recommend("1:5"), ["neither a mapping nor a list"]),
    ("rating-not-a-pair", lambda r, f, c: r.recommend([("1", 5, 3)]), ["not an (item, rating) pair"]),
    ("rating-text", lambda r, f, c: r.recommend({"1": "five"}), ["rating 'five'", "not a number"]),
    ("rating-bool", lambda r, f, c: r.recommend({"1": True}), ["rating True", "not a number"]),
    ("rating-outside-scale", lambda r, f, c: r.recommend({"1": 9}), ["item '1' has rating 9", "[1, 5]"]),
    ("item-id-float", lambda r, f, c: r.recommend({1.0: 5}), ["1.0 (float) is not an id"]),
    ("item-id-none", lambda r, f, c: r.recommend({None: 5}), ["None (NoneType) is not an id"]),
    ("item-id-bool", lambda r, f, c: r.recommend({True: 5}), ["True (bool) is not an id"]),
    ("item-id-unknown", lambda r, f, c: r.recommend({"u1": 5}), ["item 'u1' is not in the catalogue"]),
    ("no-ratings", lambda r, f, c: r.recommend({}), ["no ratings"]),
    ("candidates-unknown", lambda r, f, c: r.recommend({"1": 5}, candidates=["2", "99"]),
     ["candidates: item '99' is not in the catalogue"]),
    ("candidates-empty", lambda r, f, c: r.recommend({"1": 5}, candidates=[]), ["candidates is empty"]),
    ("candidates-a-string", lambda r, f, c: r.recommend({"1": 5}, candidates="12"), ["not a list of item ids"]),
    ("score-no-items", lambda r, f, c: r.score({"1": 5}, []), ["items to score is empty"]),
    ("profile-unknown-field", lambda r, f, c: r.recommend({"1": 5}, {"age": 3}), ["unknown profile field 'age'"]),
    ("profile-not-a-mapping", lambda r, f, c: r.recommend({"1": 5}, ["age"]), ["profile", "not a mapping"]),
    ("users-not-newusers", lambda r, f, c: r.recommend_many([{"1": 5}]), ["users[0] is a dict", "NewUser"]),
    ("users-one-newuser", lambda r, f, c: r.recommend_many(NewUser({"1": 5})), ["expected a list of NewUser"]),
    ("batch-size-zero", lambda r, f, c: Recommender(r.module, r.catalogue.data, batch_size=0), ["batch_size 0"]),
]


@pytest.mark.parametrize("call, words", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_bad_recommender_arguments_are_one_line(rec, trained, scratch, call, words):
    before = _snapshot(scratch)
    with pytest.raises(DataError) as info:
        call(rec, scratch, trained[1])
    message = str(info.value)
    assert "\n" not in message
    _check(message, words)
    created = _snapshot(scratch) - before
    assert created <= {"cut.ckpt", "x.ckpt", "t.ckpt", "c.yaml"}  # only the case's own input

