"""Using a trained task: load a checkpoint, write what ``polydiff predict`` generates."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from polydiff.tasks.checkpoints import check_checkpoint
from polydiff.tasks.diffusion_task import DiffusionTask
from polydiff.utils.devices import resolve_device
from polydiff.utils.files import check_samples_name, open_samples, writing_path, written_in_place

__all__ = ["SampleWriter", "check_checkpoint", "load"]


def load(ckpt_path: str | Path, device: str | torch.device | None = None, weights_only: bool = True) -> DiffusionTask:
    """Loads a DiffusionTask checkpoint for inference, without the network.

    Args:
        ckpt_path: a ``.ckpt`` file written by ``polydiff fit`` (or by a Trainer in Python).
        device: where to put the model; None picks CUDA when available, else the CPU.
        weights_only: read tensors and plain data only; False also runs the code a file holds,
            only for a file one trusts (Lightning 2.6 or later).

    Returns:
        The task in eval mode on ``device``.

    Raises:
        FileNotFoundError: if there is no file at ``ckpt_path``.
        ValueError: if the file is not a readable DiffusionTask checkpoint, or the device is missing.
    """
    path = Path(ckpt_path).expanduser()
    device = resolve_device(device)
    trusting = {} if weights_only else {"weights_only": False}
    if trusting and "weights_only" not in inspect.signature(LightningModule.load_from_checkpoint).parameters:
        raise ValueError("weights_only=False needs Lightning 2.6 or later")
    task = DiffusionTask.load_from_checkpoint(path, map_location=device, **trusting)  # checks the file first
    return task.to(device).eval()


class SampleWriter(BasePredictionWriter):
    """Writes the sequences of ``polydiff predict`` to a file, one per line, batch by batch.

    Add it with ``--trainer.callbacks+=polydiff.SampleWriter --trainer.callbacks.output_file FILE``.

    Args:
        output_file: where to write, once predict has ended (until then, a hidden ``.FILE.partial``
            beside it). With several processes each writes ``FILE.rankN``, and rank 0 joins them
            into ``FILE`` where it can read them all (one file system). A ``.gz`` name is
            gzip-compressed, and a ``.csv`` one headed ``SMILES`` (``PSMILES``).
    """

    def __init__(self, output_file: str) -> None:
        super().__init__(write_interval="batch")
        if Path(output_file).is_dir():  # found before the model loads, not at its end
            raise ValueError(f"output_file {output_file} is a folder: give the file to write the samples to")
        check_samples_name(output_file, "output_file")
        self.output_file = output_file
        self._file = None

    def _partial(self, trainer: Trainer) -> Path:
        """Where this rank writes until predict ends: beside the output, hidden, so an interrupted
        run leaves the file it would replace as it was, never a cut-short one in its place."""
        rank = "" if trainer.world_size == 1 else f".rank{trainer.global_rank}"
        return writing_path(f"{self.output_file}{rank}")

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        partial = self._partial(trainer)
        partial.parent.mkdir(parents=True, exist_ok=True)
        # Several processes write plain rank files, which rank 0 joins into the file as named.
        target = self.output_file if trainer.world_size == 1 else partial
        self._file = open_samples(partial, target, pl_module.kind == "polymer")

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self._file.writelines(f"{sequence}\n" for sequence in prediction)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            partial = self._partial(trainer)
            if not written_in_place(partial):
                partial.unlink(missing_ok=True)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._file.close()
        self._file = None
        if trainer.world_size == 1:
            if not written_in_place(self.output_file):
                self._partial(trainer).replace(self.output_file)
            return
        # Each rank's share is whole: FILE.rankN. Rank 0 joins them into FILE where it can read
        # them all (one file system); elsewhere they stay, one per process.
        self._partial(trainer).replace(f"{self.output_file}.rank{trainer.global_rank}")
        trainer.strategy.barrier("polydiff_sample_writer")
        if not trainer.is_global_zero:
            return
        parts = [Path(f"{self.output_file}.rank{rank}") for rank in range(trainer.world_size)]
        if not all(part.is_file() for part in parts):
            rank_zero_info(f"the samples are in {self.output_file}.rankN, one file per process, on each node")
            return
        joined = writing_path(self.output_file)
        with open_samples(joined, self.output_file, trainer.lightning_module.kind == "polymer") as file:
            for part in parts:
                file.write(part.read_text())
        if not written_in_place(self.output_file):
            joined.replace(self.output_file)
        for part in parts:
            part.unlink()
        rank_zero_info(f"{self.output_file}: the samples of {trainer.world_size} processes")
