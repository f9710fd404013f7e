"""Callbacks for the tests that run polydiff in subprocesses: what each rank trained on and ended with."""

import hashlib
import json
import os
import signal
from pathlib import Path

from lightning.pytorch import Callback


def _digest(*arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(array.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class WeightProbe(Callback):
    """Writes ``rank{r}.json``: the rank, world size, final step, a digest of its weights, the
    model's ``tokens_seen`` and the tokens of the batches this rank trained on."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self.batch_tokens = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batch_tokens += int(batch["attention_mask"].sum())

    def on_train_end(self, trainer, pl_module) -> None:
        state = sorted(pl_module.state_dict().items())
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "step": trainer.global_step}
        record["weights"] = _digest(*(value for name, value in state if name != "tokens_seen"))
        record |= {"tokens_seen": int(pl_module.tokens_seen), "batch_tokens": self.batch_tokens}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class LossProbe(Callback):
    """Appends one JSON line per training step (step, loss, digest of the batch); with
    ``kill_at_step``, sends its own process ``kill_signal`` ``kill_times`` times right after that
    step: SIGKILL, as a crash would, SIGTERM, as ``kill`` or a scheduler would, or SIGINT, as Ctrl-C;
    with ``kill_rank``, only that rank of a DDP run does; with ``kill_at_batch``, after that batch of
    the first epoch instead (one within a gradient accumulation window, say); with ``kill_at_setup``,
    at the fit's setup, before any batch."""

    def __init__(
        self, output_file: str, kill_at_step: int | None = None, kill_signal: str = "SIGKILL", kill_times: int = 1,
        kill_rank: int | None = None, kill_at_batch: int | None = None, kill_at_setup: bool = False,
    ) -> None:  # fmt: skip
        self.output_file = Path(output_file)
        self.kill_at_step = kill_at_step
        self.kill_at_batch = kill_at_batch
        self.kill_signal = signal.Signals[kill_signal]
        self.kill_times = kill_times
        self.kill_rank = kill_rank
        self.kill_at_setup = kill_at_setup

    def setup(self, trainer, pl_module, stage) -> None:
        if self.kill_at_setup:
            os.kill(os.getpid(), self.kill_signal)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record = {"step": trainer.global_step, "loss": float(outputs["loss"]), "batch": _digest(batch["input_ids"])}
        with self.output_file.open("a") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.kill_at_batch is not None:
            due = trainer.current_epoch == 0 and batch_idx == self.kill_at_batch
        else:
            due = trainer.global_step == self.kill_at_step
        if due and self.kill_rank in (None, trainer.global_rank):
            for _ in range(self.kill_times):
                os.kill(os.getpid(), self.kill_signal)
