"""Sampling benchmark: speed, model calls (NFE) and the cost of the constraints.

    python benchmarks/sampling.py --ckpt_path runs/base/lightning_logs/version_0/checkpoints/best.ckpt

A block model (one that ends its own sequences, the default recipe) is measured with its default
decoding: samples/s (generation only: after loading and a warm-up), NFE and tokens per sequence
([SEP] counted); where the generation's time went, timed where each part is called: the model's
calls, the SMILES constraints (the automaton, the kekulization check and the rewinds; in all and
by part) and the rest, the decoder's own work; the model's FLOPs per sample and the rate its calls
ran at (``polydiff.utils.flops``); and the same run without the key/value cache (its samples/s,
the cache's speed-up, and whether the samples are identical).
``--device cuda --precision bf16`` runs it on a GPU under bfloat16 autocast.

A whole-sequence model is measured per (strategy, steps, cache): NFE per sequence and samples/s;
the speed-up of the cache; whether cached and uncached samples are identical under one seed (they
must be); and the Kolmogorov-Smirnov distance between the generated lengths and the training
length histogram of the checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator

import torch

from polydiff.commands import positive, user_errors
from polydiff.sampling.blockwise import Committer
from polydiff.sampling.config import SamplingConfig
from polydiff.sampling.constraints import kekulization
from polydiff.sampling.constraints.kekulization import MoleculePrefix
from polydiff.sampling.constraints.syntax import SmilesSyntax
from polydiff.sampling.generate import Generation, generate
from polydiff.tasks.diffusion_task import DiffusionTask
from polydiff.tasks.inference import load
from polydiff.utils.allocator import run_under_jemalloc
from polydiff.utils.flops import counted_flops

# The model's calls: what a sampler asks of its ``Denoiser``.
MODEL_METHODS = [(DiffusionTask, name) for name in ("encode", "encode_incremental", "draft", "logits_from_hidden")]
# The constraints' methods, by the part of them they belong to.
CONSTRAINT_METHODS = {
    "automaton": [(SmilesSyntax, "start"), (SmilesSyntax, "allowed_within"), (SmilesSyntax, "advance")],
    "kekulization": [(MoleculePrefix, "then"), (MoleculePrefix, "can_complete")],
    "rewind": [(Committer, "rewind")],
}


@contextlib.contextmanager
def timed_parts(device: torch.device) -> Iterator[dict[str, float]]:
    """Adds the wall time of every call of the model's and the constraints' methods to the yielded
    dict, by part ("model", then those of ``CONSTRAINT_METHODS``), synchronising a GPU around each
    so that the time is theirs. Nested calls count once, in the outermost call's part."""
    parts = {"model": MODEL_METHODS, **CONSTRAINT_METHODS}
    spent, depth = dict.fromkeys(parts, 0.0), [0]
    originals = [
        (part, owner, name, getattr(owner, name)) for part, methods in parts.items() for owner, name in methods
    ]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(part, method):
        def wrapper(*args, **kwargs):
            if depth[0]:
                return method(*args, **kwargs)
            depth[0] += 1
            sync()
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                sync()
                spent[part] += time.perf_counter() - start
                depth[0] -= 1

        return wrapper

    for part, owner, name, method in originals:
        setattr(owner, name, timed(part, method))
    try:
        yield spent
    finally:
        for _, owner, name, method in originals:
            setattr(owner, name, method)


def default_decoding(task: DiffusionTask, args: argparse.Namespace) -> dict:
    """Samples/s, NFE and tokens per sequence and the constraint share of the model's own decoding."""
    autocast = (
        torch.autocast(task.device.type, dtype=torch.bfloat16) if args.precision == "bf16" else contextlib.nullcontext()
    )
    with autocast:
        generate(task, min(args.batch_size, 64), batch_size=args.batch_size, seed=args.seed + 1)  # warm-up
        with timed_parts(task.device) as spent:
            result = generate(task, args.num_samples, batch_size=args.batch_size, seed=args.seed)
        counted, flops = counted_flops(
            lambda: generate(task, args.num_samples, batch_size=args.batch_size, seed=args.seed)
        )
        # The same run without the key/value cache: what the cache buys, and that it changes nothing.
        uncached = generate(
            task, args.num_samples, SamplingConfig(cache=False), batch_size=args.batch_size, seed=args.seed
        )
    tokens = (result.lengths + 1).float()  # [SEP] is a token the model writes
    model_seconds = spent.pop("model")
    constraint_seconds = sum(spent.values())
    return {
        "checkpoint": str(args.ckpt_path),
        "device": torch.cuda.get_device_name(task.device) if task.device.type == "cuda" else "cpu",
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "num_samples": args.num_samples,
        "batch_size": args.batch_size,
        "samples_per_s": round(result.samples_per_s, 2),
        "seconds": round(result.seconds, 2),
        "nfe_per_sequence": round(result.nfe.float().mean().item(), 2),
        "tokens_per_sequence": round(tokens.mean().item(), 2),
        "nfe_per_token": round(result.nfe.sum().item() / tokens.sum().item(), 3),
        "model_share": round(model_seconds / result.seconds, 3),
        "constraint_share": round(constraint_seconds / result.seconds, 3),
        "constraint_share_by_part": {part: round(seconds / result.seconds, 3) for part, seconds in spent.items()},
        "kekulization_compiled": kekulization.COMPILED,  # its Cython twin (setup.py), or the source
        "decoder_share": round(1 - (model_seconds + constraint_seconds) / result.seconds, 3),
        "model_mflop_per_sample": round(flops / args.num_samples / 1e6, 2),
        "model_gflop_per_s": round(flops / model_seconds / 1e9, 1),
        "flops_counted_on_the_same_samples": counted == result,
        "uncached_samples_per_s": round(uncached.samples_per_s, 2),
        "cache_speedup": round(uncached.seconds / result.seconds, 2),
        "cache_identical": uncached == result,
    }


def ks_distance(lengths: torch.Tensor, histogram: torch.Tensor) -> float:
    """sup_n |F_generated(n) - F_histogram(n)| over token lengths n."""
    empirical = torch.bincount(lengths, minlength=len(histogram))[: len(histogram)].double()
    reference = histogram.double().cpu()
    return (empirical.cumsum(0) / empirical.sum() - reference.cumsum(0) / reference.sum()).abs().max().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument(
        "--num_samples",
        type=positive(int),
        default=None,
        help="sequences per run (default 1000 for block models, else 64)",
    )
    parser.add_argument("--steps", type=positive(int), nargs="+", default=[64, 256, 1000])
    parser.add_argument("--strategies", nargs="+", default=["ancestral", "confidence"])
    parser.add_argument("--batch_size", type=positive(int), default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--num_threads", type=positive(int), default=None)
    parser.add_argument("--precision", choices=("32", "bf16"), default="32", help="bf16: autocast, for GPUs")
    args = parser.parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)

    task = load(args.ckpt_path, args.device)
    if task.block_size:
        args.num_samples = 1000 if args.num_samples is None else args.num_samples
        print(json.dumps(default_decoding(task, args), indent=2))
        return
    if args.precision != "32":
        parser.error("--precision: the step and cache runs of a whole-sequence model are measured in float32")
    args.num_samples = 64 if args.num_samples is None else args.num_samples
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
            same = results[True] == results[False]
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
    run_under_jemalloc()  # as ``polydiff sample`` runs (the command line's run only, not a test's)
    with user_errors("benchmarks/sampling.py"):
        main()
