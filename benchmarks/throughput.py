"""Meta-training throughput: metarec_pl's training step against per-task loops, on identical batches.

Compared, in one process and interleaved round by round (a busy machine slows all of them, though not always
alike: report several runs):

* ``metarec``: ``MetaLearner.training_step`` + backward (vectorised inner loop, ``metarec_pl.bilevel.adapt``);
* ``metarec-ckpt``: the same with ``vmap_chunk_size`` (chunks checkpointed: less memory, more compute);
* ``func-loop``: a plain per-task loop with ``torch.func.grad`` + ``functional_call``;
* ``higher``: a per-task loop with ``higher.innerloop_ctx`` (``pip install metarec_pl[bench]``).

The peers get the same shortcut as metarec: the parameter-free encoder runs once per task and only the MLP
head is differentiated.  Before timing, the meta-gradients of all methods are compared in float64.

Reported per (tasks per batch, order): meta-steps/s (median over rounds, and the best round), the ratio of
metarec to each peer, peak memory of one step (CUDA: ``max_memory_allocated`` above the resident memory;
CPU: the rise of the process's peak resident set, VmHWM, reset through ``/proc/self/clear_refs``), and the
fraction of the arithmetic floor: useful FLOPs of a step (counted by ``FlopCounterMode`` on an unpadded
per-task autograd loop) over the FLOP rate of a 1024² matrix product: the fastest measured before the run and
after every round.

    python benchmarks/throughput.py                 # 2 threads, B = 32 and 128, first and second order
    python benchmarks/throughput.py --json          # the same as one JSON object
    python benchmarks/throughput.py --device cuda   # on a GPU
    python benchmarks/throughput.py --against /tmp/pre --batch-sizes 32 --orders second   # code vs code

``--against DIR``: metarec's step of this checkout against the one of another checkout of ``metarec_pl`` (e.g.
``git archive <commit> metarec_pl | tar -x -C DIR``), each in its own process (``PYTHONPATH``), plus this checkout's
forced reference path (``inner_path="reference"``), interleaved round by round; float32 meta-gradients are
compared for equality first.  Prints steps/s per round and the median ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from typing import Callable, Optional

import torch
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.info import DataInfo
from metarec_pl.data.base import UserTaskSampler
from metarec_pl.data.synthetic import SyntheticWorld
from metarec_pl.data.types import TaskBatch, TaskCollator

try:
    import higher
except ImportError:  # the bench extra is optional
    higher = None

SETTING = dict(users=600, query=10, min_support=5, max_support=50, hidden=(64, 64), inner_steps=5, inner_lr=0.01)


# ----------------------------------------------------------------------------------------------------- data
def make_batches(batch_size: int, count: int, device: torch.device, seed: int = 0):
    """``count`` meta-batches of ``batch_size`` training users (support 5-50, query 10) of the synthetic world."""
    world = SyntheticWorld(num_users=SETTING["users"], num_items=400, min_ratings=SETTING["min_support"] + SETTING["query"],
                           max_ratings=SETTING["max_support"] + SETTING["query"], seed=seed)
    data = world.load()
    rows = torch.cat(list(data.splits["train"].values()))
    sampler = UserTaskSampler(query_size=SETTING["query"], min_support=SETTING["min_support"],
                              max_support=SETTING["max_support"])
    tasks = sampler.tasks(data, rows, seed=seed)
    if len(tasks) < batch_size:
        sys.exit(f"throughput: only {len(tasks)} training tasks, fewer than --batch-sizes {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    collate = TaskCollator(data)
    batches = []
    for _ in range(count):
        pick = torch.randperm(len(tasks), generator=gen)[:batch_size].tolist()
        batch = collate([tasks[i] for i in pick])
        batches.append(to_device(batch, device))
    return data, batches


def to_device(batch: TaskBatch, device: torch.device, dtype: Optional[torch.dtype] = None) -> TaskBatch:
    def move(s):
        s = s.to_dtype(dtype) if dtype is not None else s
        return type(s)({k: v.to(device) for k, v in s.features.items()}, s.rating.to(device), s.mask.to(device),
                       s.user.to(device), s.item.to(device))

    return TaskBatch(move(batch.support), move(batch.query), batch.key.to(device), batch.scenario)


def unpadded(model: MetaLearner, batch: TaskBatch):
    """Per task: (encoded support, ratings, encoded query, ratings), without padding."""
    out = []
    for i in range(len(batch)):
        parts = []
        for s in (batch.support, batch.query):
            n = int(s.mask[i].sum())
            x = model.network.encoder({k: v[i, :n] for k, v in s.features.items()})
            parts += [x, s.rating[i, :n]]
        out.append(tuple(parts))
    return out


# --------------------------------------------------------------------------------------------------- methods
def metarec_step(module: MetaLearner) -> Callable[[TaskBatch], None]:
    def step(batch: TaskBatch) -> None:
        module.zero_grad(set_to_none=True)
        module.training_step(batch, 0).backward()
    return step


def func_loop_step(module: MetaLearner, second_order: bool) -> Callable[[TaskBatch], None]:
    """A plain per-task loop: ``torch.func.grad`` of the support loss, SGD, query loss, one backward."""
    net, decode, lr = module.network.head, module.network.decode, module.hparams.inner_lr
    steps = module.hparams.inner_steps

    def loss(fast, x, y):
        return ((decode(functional_call(net, fast, (x,))) - y) ** 2).mean()

    def step(batch: TaskBatch) -> None:
        module.zero_grad(set_to_none=True)
        params = dict(net.named_parameters())
        total = 0.0
        for xs, ys, xq, yq in unpadded(module, batch):
            fast = params
            for _ in range(steps):
                g = torch.func.grad(loss)(fast, xs, ys)
                fast = {n: w - lr * (g[n] if second_order else g[n].detach()) for n, w in fast.items()}
            total = total + loss(fast, xq, yq)
        (total / len(batch)).backward()
    return step


def higher_step(module: MetaLearner, second_order: bool) -> Callable[[TaskBatch], None]:
    """``higher.innerloop_ctx`` per task, as in higher's MAML example (backward per task).  First order: the
    query gradient at the adapted weights is added to the initial weights (FOMAML)."""
    net, decode = module.network.head, module.network.decode
    inner_opt = torch.optim.SGD(net.parameters(), lr=module.hparams.inner_lr)
    steps = module.hparams.inner_steps

    def step(batch: TaskBatch) -> None:
        module.zero_grad(set_to_none=True)
        params = list(net.parameters())
        for xs, ys, xq, yq in unpadded(module, batch):
            with higher.innerloop_ctx(net, inner_opt, copy_initial_weights=False,
                                      track_higher_grads=second_order) as (fnet, diffopt):
                for _ in range(steps):
                    diffopt.step(((decode(fnet(xs)) - ys) ** 2).mean())
                query = ((decode(fnet(xq)) - yq) ** 2).mean() / len(batch)
                if second_order:
                    query.backward()
                else:
                    for p, g in zip(params, torch.autograd.grad(query, list(fnet.parameters()))):
                        p.grad = g if p.grad is None else p.grad + g
    return step


def reference_flops(module: MetaLearner, batch: TaskBatch, second_order: bool) -> int:
    """Useful FLOPs of one meta-step: an unpadded per-task autograd loop under ``FlopCounterMode``."""
    net, decode, lr = module.network.head, module.network.decode, module.hparams.inner_lr
    params = dict(net.named_parameters())
    counter = FlopCounterMode(display=False)
    with counter:
        total = 0.0
        for xs, ys, xq, yq in unpadded(module, batch):
            fast = params
            for _ in range(module.hparams.inner_steps):
                loss = ((decode(functional_call(net, fast, (xs,))) - ys) ** 2).mean()
                grads = torch.autograd.grad(loss, list(fast.values()), create_graph=second_order)
                fast = {n: w - lr * g for (n, w), g in zip(fast.items(), grads)}
            total = total + ((decode(functional_call(net, fast, (xq,))) - yq) ** 2).mean()
        (total / len(batch)).backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops()


# ------------------------------------------------------------------------------------------------- measuring
def matmul_rate(device: torch.device, n: int = 1024, reps: int = 10) -> float:
    """FLOP/s of an n x n float32 matrix product (median of ``reps``)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = []
    for _ in range(reps + 3):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times[3:])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _proc_mib(key: str) -> float:
    return int(re.search(rf"{key}:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024


def _return_freed_memory() -> None:
    """Make glibc map every block of 64 KiB or more on its own and unmap it when freed, so the resident set
    follows the live tensors (by default it keeps freed memory, and a step's peak would be hidden)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD (fixed: no dynamic raising)
        libc.mallopt(-1, 64 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def peak_memory_mib(step: Callable, batch: TaskBatch, device: torch.device) -> Optional[float]:
    """Peak memory of one step above what was resident before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(batch)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2 ** 20
    try:
        before = _proc_mib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak resident set, to the current resident set
        step(batch)
        return _proc_mib("VmHWM") - before
    except OSError:
        return None


def time_rounds(steps: dict[str, Callable], batches: list[TaskBatch], rounds: int, round_seconds: float,
                device: torch.device) -> tuple[dict[str, list[float]], list[float]]:
    """Meta-steps/s of each method per round (methods take turns within every round), and the matmul rate
    measured after every round (the machine's speed drifts by tens of percent within minutes on shared hosts)."""
    per_round = {}
    for name, step in steps.items():  # warm up, and size each method's round
        sync(device)
        t0 = time.perf_counter()
        step(batches[0])
        sync(device)
        per_round[name] = max(1, math.ceil(round_seconds / max(time.perf_counter() - t0, 1e-6)))
    rates: dict[str, list[float]] = {name: [] for name in steps}
    matmul = []
    for r in range(rounds):
        for name, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            for i in range(per_round[name]):
                step(batches[(r + i) % len(batches)])
            sync(device)
            rates[name].append(per_round[name] / (time.perf_counter() - t0))
        matmul.append(matmul_rate(device, reps=5))
    return rates, matmul


def memory_in_fresh_process(args, method: str, batch_size: int, order: str) -> Optional[float]:
    """Peak MiB of one warm step of ``method``, measured in a new process (in this one, memory freed by the
    earlier checks and timings hides part of the peak)."""
    import subprocess

    cmd = [sys.executable, __file__, "--memory-of", method, "--batch-sizes", str(batch_size), "--orders", order,
           "--threads", str(args.threads), "--device", args.device, "--chunk-size", str(args.chunk_size)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return float(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def measure_memory(args) -> None:
    """``--memory-of METHOD``: print the peak MiB of one warm step (see ``memory_in_fresh_process``)."""
    torch.set_num_threads(args.threads)
    _return_freed_memory()
    device, second = torch.device(args.device), args.orders[0] == "second"
    data, batches = make_batches(args.batch_sizes[0], 1, device)
    chunk = args.chunk_size if args.memory_of == "metarec-ckpt" else None
    module = make_module(data, second, chunk).to(device)
    step = {"metarec": metarec_step, "metarec-ckpt": metarec_step}.get(args.memory_of)
    step = step(module) if step else (func_loop_step if args.memory_of == "func-loop" else higher_step)(module, second)
    step(batches[0])
    print(peak_memory_mib(step, batches[0], device))


def rel_err(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    num = sum(float(((a[n] - b[n]) ** 2).sum()) for n in b) ** 0.5
    return num / sum(float((b[n] ** 2).sum()) for n in b) ** 0.5


def gradients(module: MetaLearner, step: Callable, batch: TaskBatch) -> dict[str, torch.Tensor]:
    step(batch)
    return {n: p.grad.detach().clone() for n, p in module.network.named_parameters()}


def make_module(data, second_order: bool, chunk_size: Optional[int] = None, inner_path: Optional[str] = None,
                network: str = "mlp") -> MetaLearner:
    torch.manual_seed(0)
    extra = {} if inner_path is None else {"inner_path": inner_path}  # (a checkout from before the option: None)
    adapt = {} if network == "mlp" else {"adapt": ["head.*"]}  # mlp: its encoder has no parameters
    module = MetaLearner(algorithm="maml", network=network, network_args={"hidden": list(SETTING["hidden"])},
                         inner_steps=SETTING["inner_steps"], inner_lr=SETTING["inner_lr"], first_order=not second_order,
                         vmap_chunk_size=chunk_size, data_info=DataInfo(data.schema, rating_mean=3.5), **adapt, **extra)
    return module


# ------------------------------------------------------------------------------------------ code against code
def serve(args) -> None:
    """``--serve``: a worker of ``--against``: builds one module, then answers ``run K`` (seconds for K steps) and
    ``grads PATH`` (saves the float32 meta-gradient of the first batch) on stdin/stdout."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data, batches = make_batches(args.batch_sizes[0], args.distinct_batches, device)
    module = make_module(data, args.orders[0] == "second", None, args.inner_path, args.network).to(device)
    step = metarec_step(module)
    step(batches[0])
    print("ready", flush=True)
    done = 0
    for line in sys.stdin:
        cmd, arg = line.split()
        if cmd == "grads":
            torch.save(gradients(module, step, batches[0]), arg)
            print("saved", flush=True)
            continue
        sync(device)
        t0 = time.perf_counter()
        for _ in range(int(arg)):
            step(batches[done % len(batches)])
            done += 1
        sync(device)
        print(time.perf_counter() - t0, flush=True)


def against(args) -> dict:
    """Steps/s of this checkout's metarec step, the other checkout's, and this checkout's forced reference path,
    in three worker processes taking turns round by round (``--rounds`` rounds of ``--round-seconds``)."""
    import os
    import subprocess
    import tempfile

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = [sys.executable, os.path.abspath(__file__), "--serve", "--batch-sizes", str(args.batch_sizes[0]),
            "--orders", args.orders[0], "--threads", str(args.threads), "--device", args.device,
            "--network", args.network]
    roots = {"new": (here, "auto"), "pre": (args.against, None), "new-reference": (here, "reference")}
    workers, failed = {}, {}
    for name, (root, path) in roots.items():
        env = {**os.environ, "PYTHONPATH": root}
        cmd = base + (["--inner-path", path] if path else [])
        workers[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, env=env)
        if workers[name].stdout.readline().strip() != "ready":  # e.g. a network vmap cannot run (the reference)
            errors = [ln for ln in workers.pop(name).communicate()[1].splitlines() if "Error" in ln]
            failed[name] = errors[-1] if errors else "did not start"
    assert "new" in workers and "pre" in workers, failed

    def ask(name: str, line: str) -> str:
        workers[name].stdin.write(line + "\n")
        workers[name].stdin.flush()
        return workers[name].stdout.readline().strip()

    with tempfile.TemporaryDirectory() as tmp:
        grads = {}
        for name in workers:
            ask(name, f"grads {tmp}/{name}.pt")
            grads[name] = torch.load(f"{tmp}/{name}.pt")
    identical = all(torch.equal(grads["new"][n], grads["pre"][n]) for n in grads["pre"])
    per_round = {name: max(1, math.ceil(args.round_seconds / float(ask(name, "run 1")))) for name in workers}
    rates: dict[str, list[float]] = {name: [] for name in workers}
    for _ in range(args.rounds):
        for name in workers:
            rates[name].append(per_round[name] / float(ask(name, f"run {per_round[name]}")))
    for w in workers.values():
        w.stdin.close()
        w.wait()
    ratio = [n / p for n, p in zip(rates["new"], rates["pre"])]
    return {"tasks_per_batch": args.batch_sizes[0], "order": args.orders[0], "threads": args.threads,
            "against": args.against, "float32_grads_identical": identical,
            "reference_rel_err": rel_err(grads["new-reference"], grads["new"]) if "new-reference" in grads else None,
            "failed": failed, "network": args.network,
            "steps_per_s": {n: statistics.median(r) for n, r in rates.items()}, "rounds": rates,
            "new_over_pre_per_round": ratio, "new_over_pre_median": statistics.median(ratio)}


def run(args) -> dict:
    # Timing runs with glibc's default allocator settings (what users get); only the fresh memory-measuring
    # processes map large blocks on their own (``_return_freed_memory``), which costs a page fault per block.
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = {"setting": {**SETTING, "threads": args.threads, "device": device_name(device),
                          "rounds": args.rounds, "round_seconds": args.round_seconds,
                          "chunk_size": args.chunk_size, "torch": torch.__version__,
                          "higher": getattr(higher, "__version__", "installed") if higher else None},
              "matmul_flops_per_s": matmul_rate(device), "results": []}
    for batch_size in args.batch_sizes:
        data, batches = make_batches(batch_size, args.distinct_batches, device)
        for order in args.orders:
            second = order == "second"
            module = make_module(data, second).to(device)
            steps = {"metarec": metarec_step(module)}
            if args.chunk_size and args.chunk_size < batch_size:
                steps["metarec-ckpt"] = metarec_step(make_module(data, second, args.chunk_size).to(device))
            steps["func-loop"] = func_loop_step(module, second)
            if higher is not None and not args.no_higher:
                steps["higher"] = higher_step(module, second)
            # exactness: float64 meta-gradients of every method against metarec's
            check_batch = to_device(batches[0], device, torch.float64)
            check = make_module(data, second).double().to(device)
            ref = gradients(check, metarec_step(check), check_batch)
            peers = {"func-loop": func_loop_step(check, second)}
            if "metarec-ckpt" in steps:
                check_ckpt = make_module(data, second, args.chunk_size).double().to(device)
                peers["metarec-ckpt"] = metarec_step(check_ckpt)
            if "higher" in steps:
                peers["higher"] = higher_step(check, second)
            errors = {}
            for name, step in peers.items():
                owner = check_ckpt if name == "metarec-ckpt" else check
                errors[name] = rel_err(gradients(owner, step, check_batch), ref)
            flops = reference_flops(module, batches[0], second)
            memory = {name: memory_in_fresh_process(args, name, batch_size, order) for name in steps}
            rates, matmul = time_rounds(steps, batches, args.rounds, args.round_seconds, device)
            median = {name: statistics.median(r) for name, r in rates.items()}
            # the floor uses the fastest matmul seen (before the run or after any round): conservative for metarec
            peak_matmul = max([report["matmul_flops_per_s"], *matmul])
            floor = peak_matmul / flops
            report["results"].append({
                "tasks_per_batch": batch_size, "order": order, "useful_gflop_per_step": flops / 1e9,
                "matmul_flops_per_s": peak_matmul, "matmul_rounds": matmul,
                "floor_steps_per_s": floor, "grad_rel_err_vs_metarec": errors,
                "methods": {name: {"steps_per_s": median[name], "best_steps_per_s": max(rates[name]),
                                   "rounds": rates[name], "peak_mib": memory[name],
                                   "fraction_of_floor": median[name] / floor,
                                   "metarec_speedup": median["metarec"] / median[name]}
                            for name in steps},
            })
    return report


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def print_table(report: dict) -> None:
    s = report["setting"]
    print(f"device: {s['device']}   torch {s['torch']}   higher {s['higher']}   "
          f"matmul at start: {report['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s   rounds: {s['rounds']} x ~{s['round_seconds']} s")
    print(f"setting: MAML, MLP {'x'.join(map(str, s['hidden']))} head, {s['inner_steps']} inner steps, support "
          f"{s['min_support']}-{s['max_support']}, query {s['query']}")
    for res in report["results"]:
        errs = ", ".join(f"{k} {v:.1e}" for k, v in res["grad_rel_err_vs_metarec"].items())
        print(f"\nB={res['tasks_per_batch']} {res['order']} order: useful {res['useful_gflop_per_step']:.3f} GFLOP/step, "
              f"floor {res['floor_steps_per_s']:.0f} steps/s (fastest matmul {res['matmul_flops_per_s'] / 1e9:.0f} "
              f"GFLOP/s); float64 meta-gradient rel. err vs metarec: {errs}")
        print(f"  {'method':<13}{'steps/s':>9}{'best':>9}{'metarec x':>11}{'peak MiB':>10}{'of floor':>10}")
        for name, m in res["methods"].items():
            mem = "n/a" if m["peak_mib"] is None else f"{m['peak_mib']:.0f}"
            print(f"  {name:<13}{m['steps_per_s']:>9.2f}{m['best_steps_per_s']:>9.2f}{m['metarec_speedup']:>10.2f}x"
                  f"{mem:>10}{100 * m['fraction_of_floor']:>9.1f}%")


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    p.add_argument("--orders", nargs="+", choices=["first", "second"], default=["second", "first"])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per method (the median is reported)")
    p.add_argument("--round-seconds", type=float, default=1.0, help="approximate length of one method's round")
    p.add_argument("--distinct-batches", type=int, default=4, help="different meta-batches cycled through")
    p.add_argument("--chunk-size", type=int, default=32, help="vmap_chunk_size of the metarec-ckpt row (0: none)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-higher", action="store_true", help="skip the higher peer")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--memory-of", help=argparse.SUPPRESS)
    p.add_argument("--against", help="another checkout of metarec_pl to time this one against (see above)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--inner-path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--network", default="mlp", help="network of --against (mlp, or melu adapting head.*)")
    args = p.parse_args(argv)
    if args.memory_of:
        return measure_memory(args)
    if args.serve:
        return serve(args)
    if args.against:
        print(json.dumps(against(args)))
        return
    if higher is None and not args.no_higher:
        print("throughput: `higher` is not installed (pip install 'metarec_pl[bench]'); its rows are skipped",
              file=sys.stderr)
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", message=".*self.log.*")
    main()
