"""fp16 and bf16 autocast with second-order inner loops: the meta-gradient stays finite and close to float32 on a
batch whose inner gradients are tiny (output layer scaled by 1e-7: hidden-layer gradients ~1e-8, below fp16's
smallest subnormal, 6e-8), and the fp16 inner-loss scaling helpers do what they promise.
(tests/test_precision.py covers bf16 on an ordinary batch and a bf16-mixed fit.)  On CPU, autocast runs fewer
ops in reduced precision than on CUDA; benchmarks/gpu_check.sh runs this file on a GPU too."""

import pytest
import torch

from conftest import unequal_batch
from metarec_pl.bilevel import MetaLearner
from metarec_pl.data.info import DataInfo
from metarec_pl.inner_tools import INNER_GRAD_TARGET, inner_loss_scale, unscale
from metarec_pl.losses import MSE

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# Measured on CPU (torch 2.13): fp16 relative error 0.003, bf16 0.013 (cosine > 0.9999).  bf16 keeps 8 mantissa
# bits, fp16 11; the tolerances leave room for CUDA's different kernels.
TOLERANCE = {torch.float16: 0.05, torch.bfloat16: 0.1}
OUTER_SCALE = 2.0 ** 16  # what Lightning's GradScaler starts with for 16-mixed


def meta_gradient(module: MetaLearner, batch, dtype, device: str) -> torch.Tensor:
    module.zero_grad()
    with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = module.training_step(batch, 0)
    scale = OUTER_SCALE if dtype == torch.float16 else 1.0
    (loss * scale).backward()
    return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None]) / scale


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_second_order_meta_gradient_under_autocast_is_close_to_float32(tiny_world, device, dtype):
    _, data = tiny_world
    torch.manual_seed(0)
    module = MetaLearner(algorithm="maml", network="mlp", adapt=["*"], inner_steps=3, inner_lr=0.05,
                         data_info=DataInfo(data.schema, rating_mean=3.5)).to(device)
    with torch.no_grad():
        module.network.head[-1].weight.mul_(1e-7)
    batch = move(unequal_batch(data), device)
    full, mixed = meta_gradient(module, batch, None, device), meta_gradient(module, batch, dtype, device)
    assert torch.isfinite(mixed).all()
    assert float((mixed - full).norm() / full.norm()) < TOLERANCE[dtype]


def move(batch, device):
    from metarec_pl.data.types import Samples, TaskBatch

    def m(s):
        return Samples({k: v.to(device) for k, v in s.features.items()}, s.rating.to(device), s.mask.to(device),
                       s.user.to(device), s.item.to(device))

    return TaskBatch(m(batch.support), m(batch.query), batch.key.to(device), batch.scenario)


def test_inner_loss_scale_lifts_tiny_output_gradients_to_the_target():
    pred = torch.tensor([[3.5 + 1e-6, 3.5, 0.0], [4.0, 1.0, 2.0]])
    target = torch.tensor([[3.5, 3.5, 0.0], [1.0, 1.0, 2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    scale = inner_loss_scale(MSE().grad(pred, target, mask))
    largest = (2 * (pred - target).abs() * mask / mask.sum(-1, keepdim=True)).amax(-1)
    assert torch.equal(torch.exp2(torch.log2(scale).round()), scale)  # powers of two: exact to apply and undo
    scaled = largest * scale
    assert bool(((scaled > INNER_GRAD_TARGET / 2) & (scaled <= INNER_GRAD_TARGET)).all()), scaled
    assert float(scale[0]) > 1e5 and float(scale[1]) < 16  # lifted where tiny, not blown up where large


def test_unscale_skips_the_step_of_a_task_with_non_finite_gradients():
    scale = torch.tensor([4.0, 8.0])
    w = torch.tensor([[2.0, 4.0], [float("inf"), 8.0]])
    b = torch.tensor([[4.0], [8.0]])
    gw, gb = unscale((w, b), scale)
    assert torch.equal(gw, torch.tensor([[0.5, 1.0], [0.0, 0.0]]))  # task 1 overflowed: no step for it
    assert torch.equal(gb, torch.tensor([[1.0], [0.0]]))
