"""StepProgressBar on a real Trainer: optimizer steps against max_steps or the max_time budget."""

import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from torch.utils.data import DataLoader, TensorDataset

from polydiff import DiffusionTask, MoleculeDataModule
from polydiff.cli import PolydiffCLI
from polydiff.tasks.progress import StepProgressBar, estimate_total_steps

ROOT = Path(__file__).parents[2]
BASE = str(ROOT / "recipes" / "base.yaml")
TINY = str(ROOT / "tests" / "configs" / "tiny.yaml")
BATCHES_PER_EPOCH = 16

# Trainer.fit outside polydiff.cli.main, whose filter hides this deprecation in Lightning's own code.
pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning")


class Regression(LightningModule):
    """A linear layer fitted to random inputs; ``seconds_per_batch`` makes steps take wall-clock time."""

    def __init__(self, seconds_per_batch: float = 0.0):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.seconds_per_batch = seconds_per_batch

    def training_step(self, batch, batch_idx):
        if self.seconds_per_batch:
            time.sleep(self.seconds_per_batch)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class BarProbe(Callback):
    """Records the training bar's (n, total) and the global step after the bar's own update."""

    def __init__(self, bar: StepProgressBar):
        self.bar = bar
        self.at_start = None
        self.seen: list[tuple[int, int | None, int]] = []

    def on_train_start(self, trainer, pl_module):
        self.at_start = (self.bar.train_progress_bar.n, self.bar.train_progress_bar.total)

    def on_train_batch_end(self, trainer, *args):
        self.seen.append((self.bar.train_progress_bar.n, self.bar.train_progress_bar.total, trainer.global_step))


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4 * BATCHES_PER_EPOCH, 4, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


def fit(tmp_path, bar: Callback, module: LightningModule | None = None, ckpt_path=None, **trainer_kwargs) -> Trainer:
    torch.manual_seed(0)
    trainer = Trainer(
        accelerator="cpu", devices=1, callbacks=[bar, BarProbe(bar)], logger=False, enable_checkpointing=False,
        enable_model_summary=False, default_root_dir=tmp_path, **trainer_kwargs,
    )  # fmt: skip
    trainer.fit(module or Regression(), loader(), ckpt_path=ckpt_path)
    return trainer


def probe(trainer: Trainer) -> BarProbe:
    return next(c for c in trainer.callbacks if isinstance(c, BarProbe))


def test_bar_counts_optimizer_steps_against_max_steps_across_epochs(tmp_path):
    bar = StepProgressBar()
    # 16 batches an epoch, 3 per step: 6 steps an epoch (the last one on 1 batch), so 10 steps span two epochs.
    trainer = fit(tmp_path, bar, max_steps=10, accumulate_grad_batches=3)
    assert trainer.global_step == 10
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (10, 10)
    assert bar.train_progress_bar.desc.startswith("train")
    assert "train/loss" in bar.train_progress_bar.postfix
    seen = probe(trainer).seen
    assert len(seen) == 10 * 3 - 2  # every batch, across the epoch boundary
    assert all(n == step and total == 10 for n, total, step in seen)


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_bar_resumes_at_the_checkpoint_step(tmp_path):
    first = fit(tmp_path, StepProgressBar(), max_steps=4)
    first.save_checkpoint(tmp_path / "step4.ckpt")
    bar = StepProgressBar()
    trainer = fit(tmp_path, bar, ckpt_path=tmp_path / "step4.ckpt", max_steps=10)
    assert probe(trainer).at_start == (4, 10)
    assert bar.train_progress_bar.initial == 4  # tqdm's rate and ETA count this run's steps only
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (10, 10)
    assert [n for n, _, _ in probe(trainer).seen] == list(range(5, 11))


def test_bar_total_follows_the_time_budget(tmp_path):
    bar = StepProgressBar()
    trainer = fit(tmp_path, bar, Regression(seconds_per_batch=0.02), max_steps=100_000, max_time={"seconds": 1.5})
    steps = trainer.global_step
    assert 10 < steps < 100_000  # time, not max_steps, ended it
    watch = probe(trainer)
    assert watch.at_start == (0, None)  # no rate yet: "?", not 100000
    assert all(total is not None and step <= total < 100_000 for _, total, step in watch.seen)
    # Midway the estimate is already of the order of the steps the run reached (not the step cap).
    _, midway, _ = watch.seen[len(watch.seen) // 2]
    assert steps / 2 <= midway <= steps * 2
    # The time is up: the bar ends full at the step the run reached.
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (steps, steps)


def test_epochs_cap_the_time_estimate(tmp_path):
    bar = StepProgressBar()
    # Five minutes would take thousands of steps; one epoch of 16 batches at 3 a step is 6.
    trainer = fit(tmp_path, bar, max_epochs=1, max_time={"minutes": 5}, accumulate_grad_batches=3)
    assert trainer.global_step == 6
    assert all(total == 6 for _, total, step in probe(trainer).seen if step > 0)  # before: no rate, so "?"
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (6, 6)


def test_epochs_alone_keep_lightnings_bar(tmp_path):
    bar = StepProgressBar()
    fit(tmp_path, bar, max_epochs=2)
    assert bar.train_progress_bar.desc.startswith("Epoch 1")
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (BATCHES_PER_EPOCH, BATCHES_PER_EPOCH)


def test_estimate_of_the_final_step():
    # 100 steps in 10 s, 50 s left: 500 more.
    assert estimate_total_steps(100, 10.0, 50.0) == 600
    assert estimate_total_steps(100, 10.0, 50.0, max_steps=20_000) == 600
    assert estimate_total_steps(100, 10.0, 50.0, max_steps=300) == 300
    # Resumed at step 1000: the rate is this run's 100 steps in 10 s.
    assert estimate_total_steps(1100, 10.0, 50.0, start_step=1000) == 1600
    # The step that crosses the deadline still runs.
    assert estimate_total_steps(100, 10.0, 0.05) == 101
    assert estimate_total_steps(100, 10.0, -3.0) == 100
    assert estimate_total_steps(0, 0.0, 50.0, max_steps=20_000) is None


def cli_trainer(*args: str) -> Trainer:
    cli = PolydiffCLI(
        DiffusionTask,
        MoleculeDataModule,
        args=["-c", BASE, "-c", TINY, *args],
        run=False,
        auto_configure_optimizers=False,
    )
    return cli.trainer


def test_cli_adds_the_step_bar_only_where_lightning_would_add_a_bar(tmp_path):
    root = ["--trainer.default_root_dir", str(tmp_path)]
    assert cli_trainer(*root).progress_bar_callback is None  # tiny.yaml: enable_progress_bar false
    assert isinstance(
        cli_trainer(*root, "--trainer.enable_progress_bar", "true").progress_bar_callback, StepProgressBar
    )
    own = tmp_path / "own_bar.yaml"
    own.write_text(
        "trainer:\n  enable_progress_bar: true\n  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.TQDMProgressBar\n      init_args: {refresh_rate: 5}\n"
    )
    bar = cli_trainer(*root, "-c", str(own)).progress_bar_callback
    assert type(bar) is TQDMProgressBar and bar.refresh_rate == 5
