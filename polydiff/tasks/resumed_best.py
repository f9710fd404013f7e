"""A resumed fit keeps the best score of the run it continues.

``polydiff fit --ckpt_path last`` continues in a new version folder, as every Lightning run gets
its own. Lightning's ``ModelCheckpoint`` restores its record of the best checkpoint only into the
folder it was written in; elsewhere it starts afresh ("The dirpath has changed"), so the first
validation after a resume would write ``best.ckpt`` however bad its score, and ``--ckpt_path best``
(the newest ``best.ckpt``) would then load a worse model than the run's best. ``BestAcrossResume``
hands each monitoring checkpoint callback the record it saved: the new folder gets a ``best.ckpt``
only when the run improves on its best, which until then stays in the earlier folder.

A run folder copied or moved elsewhere and resumed there keeps its record with its files where they
lie in the moved folder, not at the paths they were written at. A fit whose validation set is another
than the run's (the data module says so: ``validation_changed``) keeps no record, in a new folder or
in its own: its val/nll scores other sequences, and a best score it could not compare to would keep
every new checkpoint from becoming ``best.ckpt``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

# What a ModelCheckpoint saves about its best checkpoints (the latest one, ``last_model_path``, is
# the new folder's own).
BEST_RECORD = ("best_model_score", "best_model_path", "best_k_models", "kth_best_model_path", "kth_value")


class BestAcrossResume(Callback):
    """Restores, at the start of a resumed fit's training, the best-checkpoint record of each
    ``ModelCheckpoint`` that monitors a metric and was saved in another folder, when the record's
    best file is still there (otherwise the callback starts afresh, as Lightning's does)."""

    def __init__(self) -> None:
        self._records: list[tuple[ModelCheckpoint, dict[str, Any]]] = []

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        saved = checkpoint.get("callbacks") or {}
        for callback in trainer.checkpoint_callbacks:
            state = saved.get(callback.state_key) if isinstance(callback, ModelCheckpoint) else None
            if not state or callback.monitor is None or state.get("dirpath") == callback.dirpath:
                continue  # nothing saved, nothing monitored, or the same folder: Lightning restores it
            if not all(name in state for name in BEST_RECORD) or not state["best_model_path"]:
                continue
            state = _beside(state, Path(trainer.ckpt_path).parent) if trainer.ckpt_path else state
            if Path(state["best_model_path"]).is_file():
                self._records.append((callback, state))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After every restore: some strategies restore callbacks only once set up.
        if getattr(trainer.datamodule, "validation_changed", False):
            self._records.clear()
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint) and callback.monitor is not None:
                    _forget_best(callback)  # restored by Lightning where the folder is the run's own
        for callback, state in self._records:
            for name in BEST_RECORD:
                value = state[name]
                setattr(callback, name, dict(value) if isinstance(value, dict) else value)
            rank_zero_info(
                f"resumed with the run's best {callback.monitor} {float(state['best_model_score']):.5f} "
                f"({state['best_model_path']}); a new best checkpoint is written once a validation beats it"
            )
        self._records.clear()


def _beside(state: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The record with its files where they lie relative to ``folder`` (the resumed checkpoint's) as
    they lay relative to the folder it was saved in, where its best file is there: the run was
    moved or copied, and its record names the folders it left (its best may lie in an earlier
    version folder of the run, where an earlier resume left it)."""
    saved_in = Path(state["dirpath"])

    def moved(path: str) -> str:
        return os.path.normpath(folder / os.path.relpath(path, saved_in)) if path else path

    if saved_in.resolve() == folder.resolve() or not Path(moved(state["best_model_path"])).is_file():
        return state
    return {
        **state,
        "best_model_path": moved(state["best_model_path"]),
        "kth_best_model_path": moved(state["kth_best_model_path"]),
        "best_k_models": {moved(path): score for path, score in state["best_k_models"].items()},
    }


def _forget_best(callback: ModelCheckpoint) -> None:
    """The callback's best-checkpoint record as a new ModelCheckpoint starts with it."""
    callback.best_k_models, callback.kth_best_model_path = {}, ""
    callback.best_model_score, callback.best_model_path = None, ""
    callback.kth_value = torch.tensor(torch.inf if callback.mode == "min" else -torch.inf)
