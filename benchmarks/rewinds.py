"""Validity against model calls as speculative decoding backs out of more dead ends.

    python benchmarks/rewinds.py --ckpt_path CKPT

Samples ``--num_samples`` molecules (seed 0) from a checkpoint that decodes speculatively, once
per (REWIND, MAX_REWINDS) setting of ``polydiff.sampling.speculative``: a row at a dead end takes
back its last REWIND tokens, twice as many at each further one, at most MAX_REWINDS times. Prints
JSON per setting: strict validity (RDKit parses the string as sampled), model calls per token
([SEP] counted) and samples/s.
"""

from __future__ import annotations

import argparse
import json

import polydiff
import polydiff.sampling.speculative as speculative
from polydiff.chem.molecules import parse, quiet_rdkit
from polydiff.sampling import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--settings", nargs="+", default=["4,1", "8,2", "8,3", "8,4"], help="REWIND,MAX_REWINDS pairs")
    args = parser.parse_args()
    quiet_rdkit()
    task = polydiff.load(args.ckpt_path, "cpu")
    results = []
    for setting in args.settings:
        speculative.REWIND, speculative.MAX_REWINDS = map(int, setting.split(","))
        generation = generate(task, args.num_samples, seed=0)
        valid = sum(parse(s) is not None for s in generation.sequences if s) / args.num_samples
        calls = generation.nfe.double().sum().item() / (generation.lengths + 1).double().sum().item()
        results.append(
            {"rewind": speculative.REWIND, "max_rewinds": speculative.MAX_REWINDS, "valid": valid,
             "nfe_per_token": round(calls, 4), "samples_per_s": round(generation.samples_per_s, 1)}
        )  # fmt: skip
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
