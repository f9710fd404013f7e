"""Sampling benchmark: speed and model calls (NFE) of the reverse process, with and without cache.

    python benchmarks/sampling.py --ckpt_path runs/base/lightning_logs/version_0/checkpoints/best.ckpt

Prints JSON: one run per (strategy, steps, cache) with its NFE per sequence and samples/s; the
speed-up of the cache per strategy and number of steps; whether cached and uncached samples are
identical under one seed (they must be); and the Kolmogorov-Smirnov distance between the
generated lengths and the training length histogram of the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from polydiff.sampling.config import SamplingConfig
from polydiff.sampling.generate import Generation, generate
from polydiff.tasks.inference import load


def ks_distance(lengths: torch.Tensor, histogram: torch.Tensor) -> float:
    """sup_n |F_generated(n) - F_histogram(n)| over token lengths n."""
    empirical = torch.bincount(lengths, minlength=len(histogram))[: len(histogram)].double()
    reference = histogram.double().cpu()
    return (empirical.cumsum(0) / empirical.sum() - reference.cumsum(0) / reference.sum()).abs().max().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--num_samples", type=int, default=64, help="sequences per run (uncached 1000 steps is slow)")
    parser.add_argument("--steps", type=int, nargs="+", default=[64, 256, 1000])
    parser.add_argument("--strategies", nargs="+", default=["ancestral", "confidence"])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--num_threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)

    task = load(args.ckpt_path, args.device)
    if task.block_size:
        parser.error(f"the step and cache runs need a whole-sequence model (block_size 0), not {task.block_size}")
    generate(task, 8, SamplingConfig(steps=4), batch_size=8, seed=0)  # warm-up: first calls allocate
    runs, speedup, identical = [], {}, True
    for strategy in args.strategies:
        for steps in args.steps:
            results: dict[bool, Generation] = {}
            for cache in (True, False):
                config = SamplingConfig(steps=steps, strategy=strategy, cache=cache)
                result = generate(task, args.num_samples, config, batch_size=args.batch_size, seed=args.seed)
                results[cache] = result
                nfe = result.nfe.float()
                runs.append({
                    "strategy": strategy,
                    "steps": steps,
                    "cache": cache,
                    "nfe": {"mean": round(nfe.mean().item(), 2), "max": int(nfe.max().item())},
                    "samples_per_s": round(result.samples_per_s, 2),
                    "seconds": round(result.seconds, 2),
                    "length_ks": round(ks_distance(result.lengths, task.length_histogram), 4),
                })  # fmt: skip
                print(json.dumps(runs[-1]), file=sys.stderr)
            same = results[True].sequences == results[False].sequences
            identical &= same
            speedup[f"{strategy}/{steps}"] = round(results[False].seconds / results[True].seconds, 2)
            runs[-2]["identical_to_uncached"] = same
    report = {
        "checkpoint": str(args.ckpt_path),
        "device": str(task.device),
        "threads": torch.get_num_threads(),
        "num_samples": args.num_samples,
        "runs": runs,
        "cache_speedup": speedup,
        "cached_equals_uncached": identical,
        # A KS distance below this is what samples of this size drawn from the histogram itself give (95%).
        "length_ks_critical_95": round(1.36 / args.num_samples**0.5, 4),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
