"""The speed bar in one process: a checkpoint's own decoding and the CharRNN's, taking turns.

    python benchmarks/speed_ratio.py --ckpt_path CKPT --rounds 3

``benchmarks/quality.py`` times each generator once, minutes apart, and a shared VM's speed drifts
within minutes (E39's CharRNN sampled at half its rate of E38: docs/quality.md). Here both generate
``--num_samples`` at ``--batch_size`` in turns, ``--rounds`` times, in one process on the same
threads and allocator, after a warm-up each. The CharRNN is untrained, on the characters of the
bundled MOSES training set: it runs its 100 steps for every row whatever its weights, so its speed
does not depend on them. Prints JSON: each generator's samples/s per round, the ratios
(polydiff / CharRNN) and their median, and the FLOPs per sample of each (``polydiff.utils.flops``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from polydiff.baselines.char_rnn import CharRNN, CharVocabulary, sample_char_rnn
from polydiff.data.files import bundled_moses_path
from polydiff.sampling.generate import generate
from polydiff.tasks.inference import load
from polydiff.utils.allocator import run_under_jemalloc
from polydiff.utils.files import read_smiles
from polydiff.utils.flops import counted_flops


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=256, help="sequences generated together, by both models")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    task = load(args.ckpt_path, "cpu")
    torch.manual_seed(args.seed)
    vocabulary = CharVocabulary.from_smiles(read_smiles(bundled_moses_path("train")))
    char_rnn = CharRNN(len(vocabulary))

    def polydiff_run() -> float:
        return generate(task, args.num_samples, batch_size=args.batch_size, seed=args.seed).samples_per_s

    def char_rnn_run() -> float:
        start = time.perf_counter()
        sample_char_rnn(char_rnn, vocabulary, args.num_samples, batch_size=args.batch_size, seed=args.seed)
        return args.num_samples / (time.perf_counter() - start)

    generate(task, min(args.batch_size, 64), batch_size=args.batch_size, seed=args.seed + 1)  # warm-ups
    sample_char_rnn(char_rnn, vocabulary, min(args.batch_size, 64), batch_size=args.batch_size, seed=args.seed + 1)
    rates: dict[str, list[float]] = {"polydiff": [], "charrnn": []}
    for _ in range(args.rounds):
        rates["polydiff"].append(polydiff_run())
        rates["charrnn"].append(char_rnn_run())
    ratios = [ours / theirs for ours, theirs in zip(rates["polydiff"], rates["charrnn"], strict=True)]
    _, polydiff_flops = counted_flops(polydiff_run)
    _, char_rnn_flops = counted_flops(char_rnn_run)
    print(json.dumps({
        "checkpoint": str(args.ckpt_path),
        "threads": torch.get_num_threads(),
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
    main()
