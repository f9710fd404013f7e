"""The ``polydiff fit`` progress bar: optimizer steps against the budget that will actually end the run.

Lightning's bar counts the batches of the current epoch, so a run bounded by ``max_steps`` or
``max_time`` a fraction of the way into its first epoch shows the epoch's length and an ETA of
hours. This one counts ``trainer.global_step`` against ``max_steps``, or, when ``max_time`` ends
the run first, against the steps the run will reach by then at its rate so far. Also here: a
logging filter that keeps Lightning's adverts out of a fit's output.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Timer, TQDMProgressBar

__all__ = ["StepProgressBar", "estimate_total_steps", "hide_lightning_tips"]


def hide_lightning_tips(record: logging.LogRecord) -> bool:
    """A logging filter that drops Lightning's "💡 Tip:" adverts (for its cloud services) from every fit's output.

    Args:
        record: a record of Lightning's ``lightning.pytorch.utilities.rank_zero`` logger.
    """
    return not str(record.msg).startswith("💡 Tip:")


def estimate_total_steps(
    steps_done: int, seconds: float, seconds_left: float, max_steps: int | None = None, start_step: int = 0
) -> int | None:
    """The optimizer step a run will stop at when its wall-clock budget runs out.

    Args:
        steps_done: the current global step.
        seconds: wall-clock seconds since ``start_step``.
        seconds_left: what is left of the budget (negative once it is spent).
        max_steps: the step cap that ends the run anyway (None: none).
        start_step: the global step at which ``seconds`` started counting (> 0 after a resume).

    Returns:
        The expected final step, at most ``max_steps``; None (unknown) while no step has been timed.
    """
    steps = steps_done - start_step
    if steps <= 0 or seconds <= 0:
        return None  # not max_steps: a run that time will end shows "?", not a total it will never reach
    # The Timer checks after every step, so the step that crosses the deadline still runs: round up.
    total = steps_done + max(math.ceil(steps / seconds * seconds_left), 0)
    return total if max_steps is None else min(total, max_steps)


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, but its training bar counts optimizer steps against the run's real budget.

    With ``max_steps`` the total is ``max_steps``; with ``max_time`` (a ``Timer`` callback) it is
    the step the run will reach when the time is up, re-estimated at each update from the rate
    so far, so the bar's ETA is the time left; the smaller of the two wins. With neither, only
    epochs bound the run and the bar is Lightning's (one bar per epoch). Validation bars and the
    postfix (loss, ``v_num``, logged metrics) are Lightning's.

    Args:
        refresh_rate: redraw every this many optimizer steps (0: no bar).
        process_position: line offset of the bars, for several bars in one terminal.
        leave: keep each finished epoch's bar (only used when epochs bound the run).
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self._counts_steps = False
        self._start_step = 0
        self._start_time = 0.0
        self._shown_step = -1

    @property
    def train_description(self) -> str:
        return "train"

    @staticmethod
    def _timer(trainer: Trainer) -> Timer | None:
        return next((c for c in trainer.callbacks if isinstance(c, Timer) and c.time_remaining() is not None), None)

    @staticmethod
    def _step_cap(trainer: Trainer) -> int | None:
        """The step that ``max_steps`` or ``max_epochs`` stop at, whichever comes first (None: neither)."""
        caps = [trainer.max_steps] if trainer.max_steps >= 0 else []
        batches = trainer.num_training_batches
        if trainer.max_epochs is not None and trainer.max_epochs >= 0 and math.isfinite(batches):
            # Lightning also steps on an epoch's last batch when it ends an unfinished accumulation.
            caps.append(trainer.max_epochs * math.ceil(batches / max(trainer.accumulate_grad_batches, 1)))
        return min(caps) if caps else None

    def _expected_total(self, trainer: Trainer) -> int | None:
        cap = self._step_cap(trainer)
        timer = self._timer(trainer)
        if timer is None:
            return cap
        return estimate_total_steps(
            trainer.global_step,
            time.monotonic() - self._start_time,
            timer.time_remaining(),
            max_steps=cap,
            start_step=self._start_step,
        )

    def _show_step(self, trainer: Trainer, pl_module: LightningModule, force: bool = False) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        # With gradient accumulation several batches end at one step: redraw only when it moves.
        if bar.disable or not (force or step - self._shown_step >= self.refresh_rate):
            return
        self._shown_step = step
        bar.total = self._expected_total(trainer)
        bar.n = step
        bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._counts_steps = trainer.max_steps >= 0 or self._timer(trainer) is not None
        if not self._counts_steps:
            super().on_train_start(trainer, pl_module)
            return
        self.train_progress_bar = bar = self.init_train_tqdm()
        # One bar for the whole run, starting at the checkpoint's step on a resume; tqdm's rate
        # (hence its ETA) counts from `initial`, and so does the time estimate.
        self._start_step = self._shown_step = trainer.global_step
        self._start_time = time.monotonic()
        bar.reset(total=self._expected_total(trainer))
        bar.initial = bar.n = trainer.global_step
        bar.refresh()

    def on_train_epoch_start(self, trainer: Trainer, *args: Any) -> None:
        if not self._counts_steps:
            super().on_train_epoch_start(trainer, *args)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any) -> None:
        if not self._counts_steps:
            super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
            return
        self._show_step(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._counts_steps:
            super().on_train_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._counts_steps and not self.train_progress_bar.disable:
            self._show_step(trainer, pl_module, force=True)
            timer = self._timer(trainer)
            if timer is not None and timer.time_remaining() <= 0:
                # Time is up: the run is complete at the step it reached, whatever was estimated.
                self.train_progress_bar.total = trainer.global_step
                self.train_progress_bar.refresh()
        super().on_train_end(trainer, pl_module)
