"""Former home of the inner loop's speed and precision helpers, kept so existing imports work; they now live in
the ``metarec_pl.inner`` package (one module per concern, see ``metarec_pl/inner/planner.py``)."""

from metarec_pl.inner.fp16 import INNER_GRAD_TARGET, inner_loss_scale, unscale
from metarec_pl.inner.kernel import KernelFirstLayer
from metarec_pl.inner.linear_stack import has_written_out_backward, is_linear_stack, linear_stack, linear_stack_backward
from metarec_pl.inner.tasks import (GROUP_OVERHEAD_SAMPLES, MAX_GROUPS, adapt_checkpointed, cat_tasks, select_tasks,
                                    task_groups)

__all__ = ["GROUP_OVERHEAD_SAMPLES", "INNER_GRAD_TARGET", "MAX_GROUPS", "KernelFirstLayer", "adapt_checkpointed",
           "cat_tasks", "has_written_out_backward", "inner_loss_scale", "is_linear_stack", "linear_stack",
           "linear_stack_backward", "select_tasks", "task_groups", "unscale"]
