"""Validity and MOSES's filters against model calls as speculative decoding backs out of more dead ends.

    python benchmarks/rewinds.py --ckpt_path CKPT

Samples ``--num_samples`` molecules (seed 0) from a checkpoint that decodes speculatively, once
per (REWIND, MAX_REWINDS, REFUSED_SHARE[, REFUSED_REWINDS]) setting of
``polydiff.sampling.speculative``: a row at a dead end takes back its last REWIND tokens, twice as
many at each further one, at most MAX_REWINDS times; where the SMILES rules refuse more than
REFUSED_SHARE of p (1: never) it does the same while it has rewound fewer than REFUSED_REWINDS
times (default: the decoder's). Prints JSON per
setting: strict validity (RDKit parses the string as sampled), the share of valid molecules that
pass MOSES's filters and that hold a ring of 8+ atoms, model calls per token ([SEP] counted) and
samples/s.
"""

from __future__ import annotations

import argparse
import json

import polydiff
import polydiff.sampling.speculative as speculative
from polydiff.chem.molecules import MAX_FILTER_RING, parse, passes_filters, quiet_rdkit
from polydiff.commands import positive, user_errors
from polydiff.sampling import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--num_samples", type=positive(int), default=1000)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["8,2,0.5", "8,8,0.5"],
        help="REWIND,MAX_REWINDS,REFUSED_SHARE[,REFUSED_REWINDS]",
    )
    args = parser.parse_args()
    quiet_rdkit()
    task = polydiff.load(args.ckpt_path, "cpu")
    results, default_refused_rewinds = [], speculative.REFUSED_REWINDS
    for setting in args.settings:
        rewind, max_rewinds, refused_share, *refused_rewinds = setting.split(",")
        speculative.REWIND, speculative.MAX_REWINDS = int(rewind), int(max_rewinds)
        speculative.REFUSED_SHARE = float(refused_share)
        speculative.REFUSED_REWINDS = int(refused_rewinds[0]) if refused_rewinds else default_refused_rewinds
        generation = generate(task, args.num_samples, seed=0)
        molecules = [mol for mol in (parse(s) for s in generation if s) if mol is not None]
        large_ring = [any(len(ring) >= MAX_FILTER_RING for ring in mol.GetRingInfo().AtomRings()) for mol in molecules]
        calls = generation.nfe.double().sum().item() / (generation.lengths + 1).double().sum().item()
        results.append(
            {"rewind": speculative.REWIND, "max_rewinds": speculative.MAX_REWINDS,
             "refused_share": speculative.REFUSED_SHARE, "refused_rewinds": speculative.REFUSED_REWINDS,
             "valid": len(molecules) / args.num_samples,
             "filters": round(sum(map(passes_filters, molecules)) / max(len(molecules), 1), 4),
             "large_ring": round(sum(large_ring) / max(len(molecules), 1), 4),
             "nfe_per_token": round(calls, 4), "samples_per_s": round(generation.samples_per_s, 1)}
        )  # fmt: skip
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    with user_errors("benchmarks/rewinds.py"):
        main()
