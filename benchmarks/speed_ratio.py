"""The speed bar in one process: a checkpoint's own decoding and the CharRNN's, taking turns.

    python benchmarks/speed_ratio.py --ckpt_path CKPT --rounds 3

``benchmarks/quality.py`` times each generator once, minutes apart, and a shared VM's speed drifts
within minutes (E39's CharRNN sampled at half its rate of E38: docs/quality.md). Here both generate
``--num_samples`` at ``--batch_size`` in turns, ``--rounds`` times, in one process on the same
threads and allocator, after a warm-up each. The CharRNN is untrained, on the characters of the
bundled MOSES training set: it runs its 100 steps for every row whatever its weights, so its speed
does not depend on them. Prints JSON: each generator's samples/s per round, the ratios
(polydiff / CharRNN) and their median, and the FLOPs per sample of each (``polydiff.utils.flops``).

``--streams 2`` runs each generator as two concurrent streams instead of one, each on its own
Python thread with half the samples, half the batch's rows and half of torch's threads (one each
on 2 cores): the same threads and rows in flight, used the other way. A generator whose time is
in kernels that let go of Python's lock gains; one whose time is Python does not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from polydiff.baselines.char_rnn import CharRNN, CharVocabulary, sample_char_rnn
from polydiff.commands import positive, user_errors
from polydiff.data.files import bundled_moses_path
from polydiff.sampling.generate import generate
from polydiff.tasks.inference import load
from polydiff.utils.allocator import run_under_jemalloc
from polydiff.utils.files import read_smiles
from polydiff.utils.flops import counted_flops


def in_streams(write: Callable[[int, int, int], object], samples: int, rows: int, seed: int, streams: int) -> float:
    """samples/s of ``write(samples, rows, seed)`` split over ``streams`` concurrent Python
    threads: stream k writes its share of the samples in its share of the rows under seed + k, on
    its share of torch's threads (a setting of the process, so every stream's operations use that
    many). One stream runs on the calling thread; an error in a stream is raised here."""
    if streams == 1:
        start = time.perf_counter()
        write(samples, rows, seed)
        return samples / (time.perf_counter() - start)
    threads = torch.get_num_threads()
    shares = [samples // streams + (k < samples % streams) for k in range(streams)]
    torch.set_num_threads(max(1, threads // streams))
    try:
        with ThreadPoolExecutor(streams) as pool:
            start = time.perf_counter()
            list(pool.map(write, shares, [rows // streams] * streams, range(seed, seed + streams)))
            return samples / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--num_samples", type=positive(int), default=1000)
    parser.add_argument(
        "--batch_size", type=positive(int), default=256, help="sequences generated together, by both models"
    )
    parser.add_argument("--rounds", type=positive(int), default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--streams", type=int, default=1, help="concurrent streams per generator, sharing the threads and rows"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.streams <= min(args.batch_size, args.num_samples):
        parser.error(f"--streams must lie in 1..min(batch_size, num_samples), got {args.streams}")

    task = load(args.ckpt_path, "cpu")
    torch.manual_seed(args.seed)
    vocabulary = CharVocabulary.from_smiles(read_smiles(bundled_moses_path("train")))
    char_rnn = CharRNN(len(vocabulary))

    def polydiff_some(samples: int, rows: int, seed: int) -> object:
        return generate(task, samples, batch_size=rows, seed=seed)

    def char_rnn_some(samples: int, rows: int, seed: int) -> object:
        return sample_char_rnn(char_rnn, vocabulary, samples, batch_size=rows, seed=seed)

    def polydiff_run(streams: int = args.streams) -> float:
        return in_streams(polydiff_some, args.num_samples, args.batch_size, args.seed, streams)

    def char_rnn_run(streams: int = args.streams) -> float:
        return in_streams(char_rnn_some, args.num_samples, args.batch_size, args.seed, streams)

    generate(task, min(args.batch_size, 64), batch_size=args.batch_size, seed=args.seed + 1)  # warm-ups
    sample_char_rnn(char_rnn, vocabulary, min(args.batch_size, 64), batch_size=args.batch_size, seed=args.seed + 1)
    rates: dict[str, list[float]] = {"polydiff": [], "charrnn": []}
    for _ in range(args.rounds):
        rates["polydiff"].append(polydiff_run())
        rates["charrnn"].append(char_rnn_run())
    ratios = [ours / theirs for ours, theirs in zip(rates["polydiff"], rates["charrnn"], strict=True)]
    # Counted on one stream: torch's FLOP counter sees the operations of the thread it runs on.
    _, polydiff_flops = counted_flops(lambda: polydiff_run(1))
    _, char_rnn_flops = counted_flops(lambda: char_rnn_run(1))
    print(json.dumps({
        "checkpoint": str(args.ckpt_path),
        "threads": torch.get_num_threads(),
        "streams": args.streams,
        "num_samples": args.num_samples,
        "batch_size": args.batch_size,
        "samples_per_s": {name: [round(rate, 1) for rate in values] for name, values in rates.items()},
        "ratio": [round(ratio, 3) for ratio in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
        "mflop_per_sample": {
            "polydiff": round(polydiff_flops / args.num_samples / 1e6, 2),
            "charrnn": round(char_rnn_flops / args.num_samples / 1e6, 2),
        },
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as benchmarks/quality.py (docs/conventions.md: threads)
    run_under_jemalloc()  # as ``polydiff sample`` and benchmarks/quality.py run
    with user_errors("benchmarks/speed_ratio.py"):
        main()
