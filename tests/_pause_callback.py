"""Test helper for tests/test_resume.py: holds a fit still at a given step so the test can SIGKILL it there."""

import time
from pathlib import Path

import lightning as L


class PauseAtStep(L.Callback):
    """At the start of the batch after ``step`` optimizer steps, write ``marker`` and sleep (until killed)."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            Path(self.marker).write_text(f"epoch {trainer.current_epoch} batch {batch_idx}\n")
            time.sleep(600)
