"""Every inner-loop path gives the reference loop's meta-gradients (float64), and the planner alone picks the path.

The reference (``metarec_pl/inner/reference.py``) is forced with ``MetaLearner(inner_path="reference")``; each
faster path is allowed with ``inner_path=<path>`` and the test first asks the public planner (``inner.plan``)
which path will serve the batch, so a case cannot silently test the same path twice.  The network is ``melu``:
the reference runs the whole network under ``vmap``, and the ``mlp`` encoder's id range check is data-dependent
control flow, which ``vmap`` cannot run."""

import ast
from pathlib import Path

import pytest
import torch

from conftest import unequal_batch
from metarec_pl import inner
from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.info import DataInfo
from metarec_pl.data.types import TaskBatch
from metarec_pl.errors import ConfigError
from metarec_pl.inner.planner import ORDER

SUPPORT_SIZES = (3, 9, 17, 30)
ROOT = Path(__file__).resolve().parents[1]

# (algorithm, adapt, network, loss) -> the fastest path that fits while training
CASES = {
    ("maml", ("head.*",), "melu", "mse"): "kernel",
    ("maml", ("head.*",), "melu", "bce"): "kernel",
    ("maml", ("head.*",), "melu", "bpr"): "kernel",
    ("fomaml", ("head.*",), "melu", "mse"): "kernel",
    ("melu", None, "melu", "mse"): "kernel",
    ("anil", None, "melu", "mse"): "kernel",
    ("metasgd", ("head.*",), "melu", "mse"): "written-out",  # a learned step: no kernel form, no folded -lr
    ("reptile", ("head.*",), "melu", "mse"): "written-out",  # the query sees the adapted weights as constants
    ("maml", ("head.0.weight",), "melu", "mse"): "written-out",  # the first layer's bias does not adapt
    ("maml", ("*",), "melu", "mse"): "reference",  # the encoder adapts: the whole network under vmap
    ("metasgd", ("*",), "melu", "bce"): "reference",
}


def to_double(batch: TaskBatch) -> TaskBatch:
    return TaskBatch(batch.support.to_dtype(torch.float64), batch.query.to_dtype(torch.float64), batch.key)


def module_for(data, algorithm, adapt, network, loss, path, **kwargs) -> MetaLearner:
    torch.manual_seed(0)
    return MetaLearner(algorithm=algorithm, network=network, adapt=list(adapt) if adapt else None, inner_steps=3,
                       inner_lr=0.05, loss=loss, network_args={"hidden": [16, 8]},
                       data_info=DataInfo(data.schema, rating_mean=None if loss != "mse" else 3.5), inner_path=path,
                       **kwargs).double()


def batch_for(data, loss: str) -> TaskBatch:
    batch = to_double(unequal_batch(data, SUPPORT_SIZES))
    if loss == "mse":
        return batch
    s, q = batch.support, batch.query  # implicit feedback: ratings >= 4 are interactions
    return TaskBatch(type(s)(s.features, (s.rating >= 4).to(s.rating) * s.mask, s.mask, s.user, s.item),
                     type(q)(q.features, (q.rating >= 4).to(q.rating) * q.mask, q.mask, q.user, q.item), batch.key)


def meta_grads(module: MetaLearner, batch: TaskBatch) -> dict[str, torch.Tensor]:
    module.zero_grad()
    module.training_step(batch, 0).backward()
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def rel_err(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    num = sum(float(((a[n] - b[n]) ** 2).sum()) for n in b) ** 0.5
    return num / sum(float((b[n] ** 2).sum()) for n in b) ** 0.5


@pytest.mark.parametrize("allowed", ["auto", *ORDER[1:]])
@pytest.mark.parametrize("case", list(CASES), ids=lambda c: "-".join(str(x) for x in c))
def test_every_path_gives_the_reference_meta_gradient(tiny_world, case, allowed):
    _, data = tiny_world
    algorithm, adapt, network, loss = case
    batch = batch_for(data, loss)
    fast = module_for(data, algorithm, adapt, network, loss, allowed)
    best = CASES[case]
    expected = best if allowed == "auto" else ORDER[min(ORDER.index(best), ORDER.index(allowed))]
    assert inner.plan(fast.network, fast.algorithm, batch, 3, allowed).path == expected
    reference = module_for(data, algorithm, adapt, network, loss, "reference")
    assert inner.plan(reference.network, reference.algorithm, batch, 3, "reference").path == "reference"
    want = meta_grads(reference, batch)
    assert sum(float(g.abs().sum()) for g in want.values()) > 0
    assert rel_err(meta_grads(fast, batch), want) < 1e-10


@pytest.mark.parametrize("allowed", ["auto", "reference"])
def test_checkpointed_chunks_and_groups_around_a_path_are_exact(tiny_world, allowed):
    """``vmap_chunk_size`` splits the batch into checkpointed chunks (the kernel path recomputed in the backward);
    the forced reference takes no such shortcut.  Both give the unchunked reference's meta-gradient."""
    _, data = tiny_world
    batch = batch_for(data, "mse")
    chunked = module_for(data, "maml", ("head.*",), "melu", "mse", allowed, vmap_chunk_size=2)
    whole = module_for(data, "maml", ("head.*",), "melu", "mse", "reference")
    assert rel_err(meta_grads(chunked, batch), meta_grads(whole, batch)) < 1e-10


def test_no_inner_step_is_served_by_the_shared_weights(tiny_world):
    """``finetune`` trains without inner steps: the shared path (the network once on the whole batch), equal to the
    reference with zero steps; the kernel path serves its evaluation-time adaptation only while gradients are on."""
    _, data = tiny_world
    batch = batch_for(data, "mse")
    fast = module_for(data, "finetune", ("head.*",), "melu", "mse", "auto")
    assert inner.plan(fast.network, fast.algorithm, batch, fast.algorithm.inner_steps).path == "shared"
    reference = module_for(data, "finetune", ("head.*",), "melu", "mse", "reference")
    assert rel_err(meta_grads(fast, batch), meta_grads(reference, batch)) < 1e-10
    with torch.no_grad():
        assert inner.plan(fast.network, fast.algorithm, batch, 3).path == "written-out"
        torch.testing.assert_close(fast.adapt(batch).query_pred, reference.adapt(batch).query_pred,
                                   rtol=1e-10, atol=1e-12)


def test_fp16_autocast_plans_the_inner_loss_scaling(tiny_world):
    """Under fp16 autocast every fast path scales the inner loss, and -lr is no longer folded into the gradients
    (the scaling is made for the unscaled gradient range); without autocast neither happens."""
    _, data = tiny_world
    batch = unequal_batch(data, SUPPORT_SIZES)
    module = MetaLearner(algorithm="maml", adapt=["head.*"], inner_steps=2, data_info=DataInfo(data.schema))
    plain = inner.plan(module.network, module.algorithm, batch, 2)
    assert (plain.path, plain.fp16_scaling, plain.fold_lr) == ("kernel", False, True)
    with torch.autocast("cpu", dtype=torch.float16):
        for allowed, path in (("auto", "kernel"), ("written-out", "written-out"), ("autograd", "autograd")):
            chosen = inner.plan(module.network, module.algorithm, batch, 2, allowed)
            assert (chosen.path, chosen.fp16_scaling, chosen.fold_lr) == (path, True, False)


def test_kernel_form_gives_the_adapted_weights(tiny_world):
    """An algorithm that reads the adapted weights gets the same ones from the kernel form as from per-task copies."""
    _, data = tiny_world
    batch = batch_for(data, "mse")
    weights = {}
    for path in ("kernel", "written-out", "reference"):
        module = module_for(data, "maml", ("head.*",), "melu", "mse", path)
        module.algorithm.needs_fast_weights = True  # an instance flag: what Reptile-like algorithms declare
        weights[path] = module.adapt(batch, steps=3, create_graph=True).fast_weights
    assert set(weights["kernel"]) == set(weights["reference"]) == set(module.algorithm.adapted_names)
    for path in ("kernel", "written-out"):
        for n, w in weights["reference"].items():
            torch.testing.assert_close(weights[path][n], w, rtol=1e-10, atol=1e-12)


def test_an_unknown_inner_path_is_refused_in_one_line(tiny_world):
    _, data = tiny_world
    with pytest.raises(ConfigError, match=r"model.inner_path: 'fastest' is not an inner-loop path; expected one of "
                                          r"auto, reference, autograd, written-out, kernel") as err:
        MetaLearner(algorithm="maml", inner_path="fastest", data_info=DataInfo(data.schema))
    assert "\n" not in str(err.value)


def test_the_reference_loop_is_one_short_readable_file():
    """The generic algorithm a newcomer came for: one file under 80 lines, one autograd.grad, vmap(functional_call),
    the algorithm's inner_update and loss; and no fast-path module is imported by it."""
    path = ROOT / "metarec_pl" / "inner" / "reference.py"
    text = path.read_text()
    assert len(text.splitlines()) < 80
    for needle in ("torch.autograd.grad(", "vmap(", "functional_call(", "algorithm.inner_update", "algorithm.loss"):
        assert needle in text, needle
    assert text.count("torch.autograd.grad(") == 1
    imported = {n.module for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m and m.startswith("metarec_pl.inner")}


NO_INNER_LOOP = sorted(r.name for r in __import__("metarec_pl").plugins.registrations("algorithm")
                       if not __import__("metarec_pl").plugins.get_algorithm(r.name).gradient_based)


def test_the_learners_without_inner_loop_are_the_expected_ones():
    assert {"protonet", "matchingnet", "none", "bias", "popularity", "mf-foldin"} <= set(NO_INNER_LOOP)
    assert not {"maml", "fomaml", "metasgd", "reptile", "anil", "melu", "finetune"} & set(NO_INNER_LOOP)


@pytest.mark.parametrize("option,value", [("inner_steps", 3), ("inner_lr", 0.1), ("first_order", True),
                                          ("adapt", ["head.*"]), ("eval_inner_steps", 0)])
@pytest.mark.parametrize("algorithm", NO_INNER_LOOP)
def test_a_learner_without_inner_loop_refuses_its_options_in_one_line(tiny_world, algorithm, option, value):
    _, data = tiny_world
    with pytest.raises(ConfigError) as err:
        MetaLearner(algorithm=algorithm, data_info=DataInfo.of(data), **{option: value})
    assert str(err.value) == (f"model.{option}: algorithm '{algorithm}' has no inner loop (it is not gradient-based), "
                              f"got {value!r}; expected model.{option} left out (null)")


def test_the_base_classes_refuse_inner_options_in_code_too():
    """Constructed directly (not through MetaLearner): a MetaAlgorithm, and an ``Algorithm`` subclass that says it
    is not gradient-based (the docs/plugins.md tutorial's older form), refuse; left out, they construct."""
    from metarec_pl.algorithms.base import Algorithm, MetaAlgorithm
    from metarec_pl.algorithms.protonet import ProtoNet

    class Legacy(Algorithm):
        gradient_based = False

    for cls in (ProtoNet, MetaAlgorithm, Legacy):
        with pytest.raises(ConfigError, match=r"^model.inner_lr: algorithm \w+ has no inner loop"):
            cls(inner_lr=0.1)
        assert cls().inner_steps == cls().eval_inner_steps == 0
