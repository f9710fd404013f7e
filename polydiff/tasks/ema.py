"""EMA of the weights for DiffusionTask, on Lightning's own ``EMAWeightAveraging`` (Lightning >= 2.6).

Add it to a run with ``recipes/trainer/ema.yaml``. While training, the average follows the
weights; validation (``val/nll`` and the samples scored at its end) runs on the average; every
checkpoint holds the average as its ``state_dict``, so ``polydiff sample`` and
``polydiff.load`` use it, and the raw weights next to it, so ``--ckpt_path`` resumes exactly.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

try:
    from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging
except ImportError:  # Lightning < 2.6: the recipe still parses; instantiating says what to upgrade
    EMAWeightAveraging, WeightAveraging = None, ()

__all__ = ["EMA", "resume_without_average"]


def resume_without_average(checkpoint: dict, callbacks: list[Callback]) -> bool:
    """Points a checkpoint's ``state_dict`` at the trained weights where it holds an average of them
    that no callback of this run will restore; returns whether it did.

    An averaging run saves the average as ``state_dict`` (what sampling loads) and the weights it
    trained beside it. Resumed without its callback, the run would go on from the average, with the
    optimizer's moments of other weights: it goes on from the trained weights instead, and the
    average is left behind.
    """
    trained = checkpoint.get("current_model_state")
    if trained is None or any(isinstance(callback, WeightAveraging) for callback in callbacks):
        return False
    checkpoint["state_dict"] = trained
    return True


class EMA(EMAWeightAveraging or Callback):
    """An exponential moving average of the weights, theta_ema <- decay theta_ema + (1 - decay) theta.

    Two changes to ``EMAWeightAveraging`` fit it to DiffusionTask. Buffers (the training length
    histogram, the token count, the ids of structural tokens) are state, not weights: they are
    copied into the average, never averaged (an average of integer ids rounds them wrong). And
    the average is swapped in for the whole validation run rather than its epoch, so the
    samples the task scores at the end of validation come from the average as well.

    Args:
        decay: weight of the old average at each update (0.999: a horizon of about 1,000 steps).
        update_every_n_steps: update after every this many optimizer steps.
        update_starting_at_step: first step to update at (None: from the start).
    """

    def __init__(
        self, decay: float = 0.999, update_every_n_steps: int = 1, update_starting_at_step: int | None = None
    ) -> None:
        if EMAWeightAveraging is None:
            raise ImportError("the EMA callback needs lightning>=2.6 (EMAWeightAveraging): pip install -U lightning")
        super().__init__(
            decay=decay,
            use_buffers=False,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
        )
        self._raw_weights: dict | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # The average is a deep copy of the task. Its optimizer factory is not part of the model,
        # and LightningCLI's reaches objects that cannot be copied (under a launcher that starts
        # the DDP processes itself, their handles and locks): the copy is made without it.
        factory = getattr(pl_module, "optimizer", None)
        if factory is not None:
            pl_module.optimizer = None
        try:
            super().setup(trainer, pl_module, stage)
        finally:
            if factory is not None:
                pl_module.optimizer = factory

    @torch.no_grad()
    def _copy_buffers(self, pl_module: LightningModule) -> None:
        if self._average_model is not None:
            for average, current in zip(self._average_model.module.buffers(), pl_module.buffers(), strict=True):
                average.copy_(current)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args, **kwargs) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        self._copy_buffers(pl_module)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pass  # swapped in on_validation_start instead

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pass  # swapped back in on_validation_end, after the task's end-of-validation sampling

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average_model is not None:
            self._copy_buffers(pl_module)
            self._swap_models(pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        self._copy_buffers(pl_module)
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._raw_weights is not None:  # saved after training ended: the model holds the average now
            checkpoint["current_model_state"] = self._raw_weights

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The model keeps the average from here on (for test or predict in the same process); the
        # raw weights are kept for checkpoints written after this, so they still resume exactly.
        self._copy_buffers(pl_module)
        self._raw_weights = {name: value.detach().clone() for name, value in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)
