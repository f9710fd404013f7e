"""bf16 training throughput and model FLOPs utilization (MFU) of bert-base on the GPU at hand.

    python benchmarks/gpu_throughput.py [--batch_size 256] [--num_batches 50]

Trains the DiffusionTask with ``recipes/model/bert-base.yaml`` and bf16 autocast on MOSES
batches (as ``train_throughput.py`` builds them) under Lightning, and prints JSON: the card,
real tokens per second and MFU. Model FLOPs per token follow the usual estimate for a
transformer's training step (Kaplan et al. 2020; Chowdhery et al. 2022, appendix B):
6 N for the N non-embedding parameters (forward and backward) plus 12 L d T for attention
over T positions in L layers of width d. MFU divides the achieved FLOP rate by the card's
dense bf16 peak (NVIDIA datasheets; cards not in the table get no MFU). Without a CUDA GPU it
prints why and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from polydiff.commands import positive, user_errors

# Dense (non-sparse) bf16 tensor-core peaks, FLOP/s, from NVIDIA's datasheets.
PEAK_BF16 = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
}

ROOT = Path(__file__).parents[1]


def peak_flops(name: str) -> float | None:
    """The dense bf16 peak of a card, by the longest table key its name contains."""
    matches = [key for key in PEAK_BF16 if key in name]
    return PEAK_BF16[max(matches, key=len)] if matches else None


def flops_per_token(task, width: float) -> float:
    """6 N + 12 L d T: training FLOPs per token of the encoder and head at a padded width T."""
    config = task.model.config
    embeddings = sum(p.numel() for p in task.model.bert.embeddings.parameters())
    non_embedding = sum(p.numel() for p in task.model.parameters()) - embeddings
    return 6 * non_embedding + 12 * config.num_hidden_layers * config.hidden_size * width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=positive(int), default=256)
    parser.add_argument("--num_batches", type=positive(int), default=50, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=positive(int), default=2)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA GPU found: nothing to measure"}))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from train_throughput import build, lightning_run, make_batches, padded, real_tokens

    configs = [str(ROOT / "recipes" / f) for f in ("base.yaml", "model/bert-base.yaml", "precision/bf16-mixed.yaml")]
    cli, config = build(configs, ["--data.batch_size", str(args.batch_size), "--data.token_cache", "false"])
    data = cli.datamodule
    groups = make_batches(data, (args.num_batches + args.warmup) * args.batch_size * 2, seed=0)
    batches = padded(groups[: args.num_batches + args.warmup], data.collate.pad_token_id, None)
    rates = [lightning_run(cli, config, batches, args.warmup, seed=0) for _ in range(args.repeats)]
    tokens_per_s = statistics.median(rates)
    timed = batches[args.warmup :]
    width = sum(b["input_ids"].numel() for b in timed) / sum(len(b["input_ids"]) for b in timed)
    # Padded positions cost FLOPs too: count them, then divide by real tokens.
    padded_per_real = sum(b["input_ids"].numel() for b in timed) / real_tokens(timed)
    achieved = tokens_per_s * padded_per_real * flops_per_token(cli.model, width)
    name = torch.cuda.get_device_name()
    peak = peak_flops(name)
    print(
        json.dumps(
            {
                "device": name,
                "model": "bert-base (12 x 768)",
                "precision": "bf16-mixed",
                "batch_size": args.batch_size,
                "mean_padded_width": round(width, 1),
                "tokens_per_s": round(tokens_per_s),
                "runs_tokens_per_s": [round(r) for r in rates],
                "model_tflops_per_s": round(achieved / 1e12, 1),
                "peak_bf16_tflops": peak and peak / 1e12,
                "mfu": round(achieved / peak, 3) if peak else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    with user_errors("benchmarks/gpu_throughput.py"):
        main()
