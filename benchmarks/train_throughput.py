"""Training throughput: DiffusionTask under Lightning against a plain PyTorch loop and against padding to the maximum.

    python benchmarks/train_throughput.py --config recipes/base.yaml

Builds the recipe's model through the CLI's own parser, tokenizes three batches' worth of bundled
MOSES training molecules for each batch timed (the MOSES length distribution) in the recipe's representation, and cuts
them into the batches polydiff trains on (``LengthBucketBatchSampler``, padded to each batch's
longest). Then, ``--repeats`` times in turn, from the same initial weights:

- ``polydiff``: ``Trainer.fit`` of the DiffusionTask (its logging, LR schedule and gradient
  clipping as the recipe sets them; no validation, checkpoints or progress bar);
- ``plain_loop``: a minimal PyTorch loop over the same model, loss and batches (forward,
  backward, clipping, optimizer step);
- ``pad_to_max``: ``Trainer.fit`` again on the same lines, each batch padded to ``max_length``.

Each run is timed over its batches after ``--warmup``; tokens are the real (non-pad) ones.
Prints JSON: the median tokens/s of each, and the ratios polydiff/plain loop (target >= 0.95)
and polydiff/pad-to-max (target >= 1.5), each the median over repeats of the ratio within a
repeat (the ratio of the medians is reported too).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader

from polydiff.cli import PolydiffCLI, PolydiffParser
from polydiff.commands import positive, user_errors
from polydiff.data.batching import LengthBucketBatchSampler, MoleculeCollator, pad_sequences
from polydiff.data.datamodule import MoleculeDataModule
from polydiff.data.files import bundled_moses_path
from polydiff.tasks.diffusion_task import DiffusionTask
from polydiff.utils.files import read_smiles


class StepTimer(Callback):
    """Wall-clock time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device = warmup, device
        self.started = self.ended = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.started = self._now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ended = self._now()


def build(configs: list[str], overrides: list[str]) -> tuple[PolydiffCLI, dict]:
    """The recipe's task (fresh weights) and its trainer settings, through the CLI's parser."""
    args = [item for config in configs for item in ("-c", config)] + overrides
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "args given while sys.argv has the benchmark's own options"
        cli = PolydiffCLI(
            DiffusionTask, MoleculeDataModule, args=args, run=False, parser_class=PolydiffParser,
            auto_configure_optimizers=False, save_config_callback=None,
        )  # fmt: skip
    return cli, cli.config


def make_batches(data: MoleculeDataModule, num_lines: int, seed: int) -> list[list[np.ndarray]]:
    """Token id sequences of MOSES training lines, grouped as polydiff's bucketing sampler groups them."""
    lines = read_smiles(bundled_moses_path("train"))
    rng = np.random.default_rng(seed)
    chosen = [lines[i] for i in rng.choice(len(lines), num_lines, replace=False)]
    collator = MoleculeCollator(
        data.hparams.tokenizer_name or data.hparams.representation, data.hparams.max_length, data.hparams.representation
    )
    ids = [np.asarray(x) for x in collator.token_ids(chosen)]
    sampler = LengthBucketBatchSampler([len(x) for x in ids], data.hparams.batch_size, data.hparams.bucket_window, seed)
    return [[ids[i] for i in batch] for batch in sampler if len(batch) == data.hparams.batch_size]


def padded(groups: list[list[np.ndarray]], pad_id: int, to_length: int | None) -> list[dict[str, torch.Tensor]]:
    """Batches padded to their longest sequence, or to ``to_length``."""
    batches = []
    for group in groups:
        if to_length is not None:
            group = [*group, np.full(to_length, pad_id)]  # one all-pad row sets the width, then is dropped
        batch = pad_sequences(group, pad_id)
        if to_length is not None:
            batch = {key: value[:-1] for key, value in batch.items()}
        batches.append(batch)
    return batches


def real_tokens(batches: list[dict[str, torch.Tensor]]) -> int:
    return int(sum(batch["attention_mask"].sum() for batch in batches))


def fresh_task(cli: PolydiffCLI) -> DiffusionTask:
    """A copy of the recipe's task as built: every run starts from the same weights."""
    return copy.deepcopy(cli.model)


def lightning_run(cli, config, batches, warmup: int, seed: int) -> float:
    """Tokens per second of ``Trainer.fit`` on the batches (after ``warmup`` of them)."""
    task = fresh_task(cli)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    timer = StepTimer(warmup, device)
    trainer = Trainer(
        accelerator="auto", devices=1, precision=config["trainer"]["precision"], max_steps=len(batches),
        gradient_clip_val=config["trainer"]["gradient_clip_val"], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
        log_every_n_steps=config["trainer"]["log_every_n_steps"],
    )  # fmt: skip
    trainer.fit(task, train_dataloaders=DataLoader(batches, batch_size=None))
    return real_tokens(batches[warmup:]) / (timer.ended - timer.started)


def plain_loop_run(cli, config, batches, warmup: int, seed: int) -> float:
    """Tokens per second of a minimal PyTorch loop: the same model, loss, clipping and optimizer."""
    task = fresh_task(cli)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task.to(device).train()
    optimizer = task.optimizer(task.parameters())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config["trainer"]["precision"] == "bf16-mixed")
    clip = config["trainer"]["gradient_clip_val"]
    for step, batch in enumerate(batches):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        with autocast:
            loss = task.training_loss(batch)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(task.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return real_tokens(batches[warmup:]) / (time.perf_counter() - started)


def measure(configs: list[str], overrides: list[str], num_batches: int, warmup: int, repeats: int, seed: int) -> dict:
    cli, config = build(configs, overrides)
    data = cli.datamodule
    pad_id = data.collate.pad_token_id
    groups = make_batches(data, (num_batches + warmup) * data.hparams.batch_size * 3, seed)
    order = np.random.default_rng(seed).permutation(len(groups))[: num_batches + warmup]
    groups = [groups[i] for i in order]
    bucketed, to_max = padded(groups, pad_id, None), padded(groups, pad_id, data.hparams.max_length)
    runs = {"polydiff": [], "plain_loop": [], "pad_to_max": []}
    for repeat in range(repeats):  # interleaved, so that a slow spell of a shared machine hits all three
        runs["plain_loop"].append(plain_loop_run(cli, config, bucketed, warmup, seed))
        runs["polydiff"].append(lightning_run(cli, config, bucketed, warmup, seed))
        runs["pad_to_max"].append(lightning_run(cli, config, to_max, warmup, seed))
        last = ", ".join(f"{name} {values[-1]:,.0f}" for name, values in runs.items())
        print(f"repeat {repeat + 1}/{repeats} (tokens/s): {last}", file=sys.stderr)
    median = {name: statistics.median(values) for name, values in runs.items()}
    # Ratios within each repeat (the three runs back to back, under the same load), then their
    # median: on a shared machine this pairs like with like, where a ratio of medians can take
    # its numerator and denominator from different spells of load.
    paired = {
        other: statistics.median(p / o for p, o in zip(runs["polydiff"], runs[other], strict=True))
        for other in ("plain_loop", "pad_to_max")
    }
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    return {
        "recipe": configs,
        "device": device,
        "precision": config["trainer"]["precision"],
        "batch_size": data.hparams.batch_size,
        "mean_real_tokens_per_batch": round(real_tokens(bucketed) / len(bucketed), 1),
        "mean_padded_width": round(float(np.mean([b["input_ids"].shape[1] for b in bucketed])), 1),
        "max_length": data.hparams.max_length,
        "timed_batches": num_batches,
        "repeats": repeats,
        "polydiff_tokens_per_s": round(median["polydiff"]),
        "plain_loop_tokens_per_s": round(median["plain_loop"]),
        "pad_to_max_tokens_per_s": round(median["pad_to_max"]),
        "polydiff_vs_plain_loop": round(paired["plain_loop"], 3),
        "polydiff_vs_pad_to_max": round(paired["pad_to_max"], 3),
        "ratio_of_medians": {
            "polydiff_vs_plain_loop": round(median["polydiff"] / median["plain_loop"], 3),
            "polydiff_vs_pad_to_max": round(median["polydiff"] / median["pad_to_max"], 3),
        },
        "targets": {"polydiff_vs_plain_loop": 0.95, "polydiff_vs_pad_to_max": 1.5},
        "runs_tokens_per_s": {name: [round(v) for v in values] for name, values in runs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", default=None, help="recipe files, layered (default: base)")
    parser.add_argument("--num_batches", type=positive(int), default=30, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches at the start of each run")
    parser.add_argument(
        "--repeats", type=positive(int), default=3, help="runs of each kind, interleaved; medians reported"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args, overrides = parser.parse_known_args()
    configs = args.config or [str(Path(__file__).parents[1] / "recipes" / "base.yaml")]
    result = measure(configs, overrides, args.num_batches, args.warmup, args.repeats, args.seed)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    with user_errors("benchmarks/train_throughput.py"):
        main()
