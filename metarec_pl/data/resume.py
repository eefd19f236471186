"""A DataLoader whose position inside an epoch survives a checkpoint, so a killed fit resumes exactly.

Lightning stores ``state_dict()`` of every *stateful* training loader in each checkpoint and calls
``load_state_dict()`` before a resumed epoch starts.  A plain ``DataLoader`` is not stateful: resumed
mid-epoch it would start the epoch's order again from the first batch.  Here the state is (epoch, batches
handed out); on resume the batch sampler, whose order depends only on (seed, epoch) via ``set_epoch``,
skips the batches already trained on through its ``start`` attribute.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from torch.utils.data import DataLoader


class ResumableDataLoader(DataLoader):
    """``DataLoader`` + Lightning's stateful-loader interface; needs a batch sampler with ``epoch``/``start``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handed_out = 0  # batches of the current epoch given to the training loop
        self._resume: Optional[tuple[int, int]] = None  # (epoch, batches) from a checkpoint

    def __iter__(self) -> Iterator[Any]:
        # A generator: its body runs at the first ``next()``, i.e. after Lightning's ``set_epoch``.
        sampler = self.batch_sampler
        start = 0
        if self._resume is not None:
            epoch, done = self._resume
            self._resume = None
            if getattr(sampler, "epoch", epoch) == epoch:
                start = done
        if hasattr(sampler, "start"):
            sampler.start = start
        self._handed_out = start
        for batch in super().__iter__():
            self._handed_out += 1  # counted when handed out: a checkpoint after this batch includes it
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self.batch_sampler, "epoch", 0)), "batches": self._handed_out}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["batches"]))
