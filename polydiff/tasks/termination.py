"""A fit stopped by SIGTERM or Ctrl-C keeps its last step, and so does one that ends between saves.

Lightning stops a fit at the end of the step in which SIGTERM arrived (``kill``, ``docker stop``, a
scheduler's preemption), by raising ``SIGTERMException``; its checkpoint callbacks save only at
validations and their intervals, so the steps since the last save would be lost.
``CheckpointOnTermination`` writes ``last.ckpt`` there, where ``--ckpt_path last`` resumes from.

Ctrl-C (SIGINT) would raise ``KeyboardInterrupt`` wherever the fit is, an optimizer step half
done included, and Lightning then exits saving nothing. While training runs, the first Ctrl-C only
asks the fit to stop: at the end of the next batch that steps the optimizer (so no accumulated
gradient is lost), once every process has heard of it (one reduce of a flag at such batches; a
collective in a signal handler could meet another in flight and hang DDP), it stops as SIGTERM
does and saves the same way. A second Ctrl-C stops at once, as it always did. DataLoader workers
ignore Ctrl-C (``utils.parallel.ignore_ctrl_c``): a terminal sends it to them too, and a worker that quit would
end the fit in an error instead.

A fit that reaches ``max_steps`` or ``max_time`` between validations gets its ``last.ckpt`` at the
end from Lightning 2.6's ModelCheckpoint; under 2.5, which has no such save, from this callback.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

CTRL_C_STOPPING = "polydiff: Ctrl-C: stopping once this optimizer step (and any validation under way) is done"
CTRL_C_SAVES = " to save last.ckpt (Ctrl-C again stops at once, saving nothing)\n"
CTRL_C_SAVES_NOTHING = "; no checkpoint callback keeps last.ckpt, so nothing is saved\n"


@dataclass
class Stop:
    """How the last fit of this process was stopped: the signal, and the checkpoint it saved at which step."""

    signal: signal.Signals = signal.SIGTERM
    checkpoint: Path | None = None
    step: int = 0
    # Ctrl-C that stopped the fit where it was (before training began, or a second one), which
    # Lightning ends with exit code 1; ``earlier`` is the last.ckpt an earlier step left, or the
    # checkpoint the fit was resuming, if any.
    at_once: bool = False
    began: bool = False
    earlier: Path | None = None

    def reset(self) -> None:
        self.signal, self.checkpoint, self.step = signal.SIGTERM, None, 0
        self.at_once, self.began, self.earlier = False, False, None


last_stop = Stop()  # signals are process-wide; so is what they stopped


class CheckpointOnTermination(Callback):
    """Saves ``last.ckpt`` into the folder of the first checkpoint callback that keeps one, when the
    fit ends by SIGTERM or by the first Ctrl-C during training, both at a batch's end (Ctrl-C at
    one that stepped the optimizer), so the state is whole; and at the end of training where that
    callback does not save there itself (Lightning 2.5)."""

    def __init__(self) -> None:
        self._handler_before = None
        self._ctrl_c = False
        self._stopping = ""
        self._began = False  # training has started (on_train_start)
        self._pid = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ctrl_c = False
        saves = _last_checkpoint_folder(trainer) is not None
        self._stopping = CTRL_C_STOPPING + (CTRL_C_SAVES if saves else CTRL_C_SAVES_NOTHING)
        self._began = True
        if threading.current_thread() is not threading.main_thread():  # the only thread that may set handlers
            return
        # Left alone where Ctrl-C is ignored (a fit started in a script's background) or was set
        # outside Python, which could not be put back.
        if signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, None):
            self._pid = os.getpid()
            self._handler_before = signal.signal(signal.SIGINT, self._ask_to_stop)

    def _ask_to_stop(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a process forked from this one: the main process decides
            return
        self._restore()  # a second Ctrl-C raises KeyboardInterrupt
        self._ctrl_c = True
        if rank_zero_only.rank == 0:  # Ctrl-C reaches every process of a DDP run
            # Straight to the file descriptor: a write to sys.stderr here could land inside one
            # under way (a progress bar's), which Python refuses as a reentrant call.
            os.write(2, self._stopping.encode())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        # Every rank is at the same batch, so all of them reduce here or none.
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if stepped and trainer.strategy.reduce_boolean_decision(self._ctrl_c, all=False):
            last_stop.signal = signal.SIGINT
            raise SIGTERMException  # Lightning's own way out of a fit: on_exception below saves

    def _restore(self) -> None:
        if self._handler_before is not None and signal.getsignal(signal.SIGINT) == self._ask_to_stop:
            signal.signal(signal.SIGINT, self._handler_before)
        self._handler_before = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()
        # Lightning 2.5's ModelCheckpoint keeps last.ckpt only at validations and its intervals (2.6
        # saves it at the end too): a fit ending at max_steps or max_time would lose the steps since.
        keeping = _keeping_last(trainer)
        saves_at_end = keeping is None or type(keeping).on_train_end is not Callback.on_train_end
        if not saves_at_end and getattr(keeping, "_last_global_step_saved", None) != trainer.global_step:
            trainer.save_checkpoint(str(Path(keeping.dirpath) / "last.ckpt"), weights_only=False)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()
        folder = _last_checkpoint_folder(trainer)
        if isinstance(exception, KeyboardInterrupt):  # Lightning exits with 1 next; the CLI says what stopped
            last_stop.signal, last_stop.at_once, last_stop.step = signal.SIGINT, True, trainer.global_step
            last_stop.began = self._began
            earlier = folder / "last.ckpt" if folder is not None else None
            resumed = Path(trainer.ckpt_path) if trainer.ckpt_path else None
            last_stop.earlier = earlier if earlier is not None and earlier.is_file() else resumed
        if not isinstance(exception, SIGTERMException):
            return
        if folder is not None:
            last_stop.checkpoint, last_stop.step = folder / "last.ckpt", trainer.global_step
            trainer.save_checkpoint(str(last_stop.checkpoint), weights_only=False)


def _keeping_last(trainer: pl.Trainer) -> Checkpoint | None:
    """The first checkpoint callback that keeps a ``last.ckpt``, if any."""
    return next((c for c in trainer.checkpoint_callbacks if getattr(c, "save_last", False) and c.dirpath), None)


def _last_checkpoint_folder(trainer: pl.Trainer) -> Path | None:
    """The folder of the first checkpoint callback that keeps a ``last.ckpt``, if any."""
    keeping = _keeping_last(trainer)
    return Path(keeping.dirpath) if keeping is not None else None
