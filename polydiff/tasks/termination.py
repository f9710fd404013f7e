"""A fit stopped by SIGTERM (``kill``, ``docker stop``, a scheduler's preemption) keeps its last step.

Lightning stops a fit at the end of the step in which SIGTERM arrived, by raising
``SIGTERMException``; its checkpoint callbacks save only at validations and their intervals, so
the steps since the last save would be lost. ``CheckpointOnTermination`` writes ``last.ckpt``
there, where ``--ckpt_path last`` resumes from.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException


class CheckpointOnTermination(Callback):
    """Saves ``last.ckpt`` into the folder of the first checkpoint callback that keeps one, when the
    fit ends by SIGTERM (at a step's end, so the state is whole; not on Ctrl-C, which may land in
    the middle of an optimizer step)."""

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "save_last", False) and callback.dirpath:
                trainer.save_checkpoint(str(Path(callback.dirpath) / "last.ckpt"), weights_only=False)
                return
