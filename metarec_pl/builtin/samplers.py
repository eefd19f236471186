"""Built-in task samplers, as lazy ``"module:Class"`` references (imported on first ``get``)."""

from metarec_pl.hookspecs import hookimpl

SAMPLERS = {
    "user": "metarec_pl.data.base:UserTaskSampler",
    "item": "metarec_pl.data.base:ItemTaskSampler",
    "next-item": "metarec_pl.data.next_item:NextItemSampler",  # time-ordered next-item tasks (sequence networks)
}


@hookimpl
def register_task_samplers(register):
    for name, reference in SAMPLERS.items():
        register(name, reference)
