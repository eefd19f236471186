from metarec_pl.data.base import ItemTaskSampler, UserTaskSampler
from metarec_pl.hookspecs import hookimpl


@hookimpl
def register_task_samplers(register):
    register("user", UserTaskSampler)
    register("item", ItemTaskSampler)
