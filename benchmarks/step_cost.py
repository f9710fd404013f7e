"""Time per training step of the ways a block model can train its drafter, relative to an
autoregressive model on the same batches.

    python benchmarks/step_cost.py

Builds the default recipe's encoder size (4 x 128) as: one-token blocks (``ar``, the reference);
a causal context whose windows of [MASK]s ride in the encoder's own pass (``windows``); and a
draft head with 2, 4 and 8 windows per sequence (``head2``, ``head4``, ``head8``). Each takes
``--repeats`` rounds of the same ``--batches`` batches of 128 bundled MOSES test molecules
(forward, backward, AdamW step), all in one process and in turn, so that a noisy machine slows
them alike; the first round is warm-up. Prints JSON: seconds per step of the reference and each
variant's time over it.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from polydiff.commands import positive, user_errors
from polydiff.data.files import bundled_moses_path
from polydiff.diffusion import DiffusionConfig
from polydiff.model.bert_diffusion import ModelConfig
from polydiff.tasks.diffusion_task import DiffusionTask
from polydiff.utils.files import read_smiles

VARIANTS = {
    "ar": DiffusionConfig(block_size=1),
    "windows": DiffusionConfig(block_size=4, causal_context=True, loss_weighting="flat"),
    **{
        f"head{count}": DiffusionConfig(
            block_size=4, causal_context=True, loss_weighting="flat", drafter="head", noisy_blocks=count
        )
        for count in (2, 4, 8)
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=positive(int), default=6, help="batches of 128 molecules per round")
    parser.add_argument("--repeats", type=int, default=4, help="rounds, the first of them warm-up (at least 2)")
    parser.add_argument("--threads", type=positive(int), default=2)
    args = parser.parse_args()
    if args.repeats < 2:
        parser.error("--repeats must be at least 2 (the first round warms up)")
    torch.set_num_threads(args.threads)
    size = ModelConfig(hidden_size=128, num_layers=4, num_heads=2, intermediate_size=512, dropout=0.0)
    tasks = {}
    for name, config in VARIANTS.items():
        torch.manual_seed(0)
        task = DiffusionTask(model_config=size, diffusion_config=config)
        tasks[name] = (task, torch.optim.AdamW(task.parameters(), 1e-3))
    lines = read_smiles(bundled_moses_path("test"))[: 128 * args.batches]
    tokenizer = tasks["ar"][0].tokenizer
    batches = [
        dict(tokenizer(lines[i : i + 128], padding=True, return_tensors="pt")) for i in range(0, len(lines), 128)
    ]
    seconds = {name: 0.0 for name in tasks}
    for repeat in range(args.repeats):
        for name, (task, optimizer) in tasks.items():
            for batch in batches:
                start = time.perf_counter()
                loss = task.training_loss(batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if repeat:  # the first round warms up
                    seconds[name] += time.perf_counter() - start
    steps = (args.repeats - 1) * len(batches)
    result = {"ar_seconds_per_step": round(seconds["ar"] / steps, 3)}
    result |= {f"{name}_over_ar": round(seconds[name] / seconds["ar"], 3) for name in tasks if name != "ar"}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    with user_errors("benchmarks/step_cost.py"):
        main()
