"""Constraint benchmark: polydiff's SMILES checks against ``partialsmiles``, prefix by prefix.

    pip install partialsmiles==2.0
    python benchmarks/constraints.py --samples runs/final/charrnn/samples.smi

The sampler asks, after every token, whether the prefix can still become a molecule RDKit
accepts. polydiff answers with the SMILES automaton (``constraints/syntax.py``: grammar and
valence, batched over rows, its state carried from token to token) and the kekulization check
(``constraints/kekulization.py``: the aromatic rings written so far). ``partialsmiles`` (O'Boyle,
a validating parser of partial SMILES) answers the same question by parsing the prefix with
``partial=True``. Both are asked about every token-boundary prefix of the strings: the first
``--num_molecules`` of the bundled MOSES test set (valid molecules: every prefix should pass) and
the ``--samples`` given (a CharRNN's, valid or not, where refusals happen), and, with
``--written_doubles N``, the first N MOSES molecules again with a ``=`` written between two
neighbouring aromatic atoms (a seeded pick in each), which RDKit reads as a double bond. Prints JSON:
how often the two agree, the prefixes where only one refuses (with examples), how often each one's
verdict on a whole string matches RDKit's (and, per group of strings, how many it gets wrong), and
microseconds per prefix for each.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from rdkit import Chem

from polydiff.chem.molecules import quiet_rdkit
from polydiff.commands import positive, user_errors
from polydiff.data.files import bundled_moses_path
from polydiff.data.tokenizer import load_tokenizer
from polydiff.sampling.constraints.kekulization import MoleculePrefix, is_aromatic
from polydiff.sampling.constraints.syntax import SmilesSyntax
from polydiff.utils.files import read_smiles


def polydiff_verdicts(
    strings: list[list[str]], syntax: SmilesSyntax, ids: list[list[int]], seconds: dict[str, float]
) -> list[list[bool]]:
    """Per string, whether each prefix (1 .. n tokens, then the end) passes polydiff's checks: every
    token allowed by the automaton when it came, and the aromatic rings still kekulizable. Adds the
    time of each check to ``seconds``."""
    rows, longest = len(ids), max(len(row) for row in ids)
    sep = syntax.tokens.index("[SEP]")
    padded = torch.full((rows, longest + 1), sep)
    for row, row_ids in enumerate(ids):
        padded[row, : len(row_ids)] = torch.tensor(row_ids)
    state = syntax.start(rows, torch.device("cpu"))
    passing = torch.ones(rows, dtype=torch.bool)
    verdicts: list[list[bool]] = [[] for _ in range(rows)]
    prefixes = [MoleculePrefix()] * rows
    for position in range(longest + 1):
        tokens = padded[:, position]
        start = time.perf_counter()
        passing &= syntax.allowed(state).gather(1, tokens.unsqueeze(-1)).squeeze(-1)
        state = syntax.advance(state, tokens)
        seconds["automaton"] += time.perf_counter() - start
        start = time.perf_counter()
        for row in range(rows):
            if position > len(ids[row]):  # past the row's tokens and its end
                continue
            if not passing[row]:  # refused once, refused for good (the graph assumes a parsable prefix)
                verdicts[row].append(False)
                continue
            token = strings[row][position] if position < len(ids[row]) else "[SEP]"
            prefixes[row] = prefixes[row].then(token)
            passing[row] = prefixes[row].can_complete()
            verdicts[row].append(bool(passing[row]))
        seconds["kekulization"] += time.perf_counter() - start
    return verdicts


def partialsmiles_verdicts(strings: list[list[str]]) -> list[list[bool]]:
    """Per string, whether partialsmiles parses each prefix (partial) and then the whole (complete)."""
    import partialsmiles

    def parses(text: str, partial: bool) -> bool:
        try:
            partialsmiles.ParseSmiles(text, partial=partial)
        except partialsmiles.Error:
            return False
        return True

    verdicts = []
    for tokens in strings:
        prefixes = ["".join(tokens[: n + 1]) for n in range(len(tokens))]
        verdicts.append([parses(text, True) for text in prefixes] + [parses("".join(tokens), False)])
    return verdicts


def with_written_doubles(strings: list[list[str]], seed: int = 0) -> list[str]:
    """Each tokenized string with ``=`` written between two neighbouring aromatic atoms, picked at
    random (``seed``); strings with no such pair are left out."""
    rng, out = random.Random(seed), []
    for tokens in strings:
        pairs = [n for n in range(1, len(tokens)) if is_aromatic(tokens[n - 1]) and is_aromatic(tokens[n])]
        if pairs:
            n = rng.choice(pairs)
            out.append("".join([*tokens[:n], "=", *tokens[n:]]))
    return out


def first_refusal(verdicts: list[bool]) -> int | None:
    return next((n for n, ok in enumerate(verdicts) if not ok), None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", default=None, help="a file of generated SMILES, valid or not")
    parser.add_argument("--num_molecules", type=positive(int), default=1000, help="MOSES test molecules")
    parser.add_argument("--num_samples", type=positive(int), default=1000, help="lines of --samples")
    parser.add_argument(
        "--written_doubles",
        type=positive(int),
        default=None,
        help="MOSES molecules to judge again with an = between aromatic atoms",
    )
    parser.add_argument("--examples", type=int, default=5, help="disagreements to show")
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer("smiles")
    moses = read_smiles(bundled_moses_path("test"))
    groups = {"moses": moses[: args.num_molecules]}
    if args.samples:
        groups["samples"] = [line for line in read_smiles(args.samples) if line][: args.num_samples]
    if args.written_doubles:
        groups["written_doubles"] = with_written_doubles(
            [tokenizer.tokenize(text) for text in moses[: args.written_doubles]]
        )
    texts = [text for group in groups.values() for text in group]
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    strings = [tokenizer.convert_ids_to_tokens(row) for row in ids]
    syntax = SmilesSyntax(tokenizer)

    ours_seconds = {"automaton": 0.0, "kekulization": 0.0}
    ours = polydiff_verdicts(strings, syntax, ids, ours_seconds)
    start = time.perf_counter()
    theirs = partialsmiles_verdicts(strings)
    theirs_seconds = time.perf_counter() - start

    quiet_rdkit()
    rdkit_valid = [Chem.MolFromSmiles(text) is not None for text in texts]
    prefixes = sum(len(row) for row in ours)
    pairs = [(a, b, text, n) for row_a, row_b, text in zip(ours, theirs, texts, strict=True)
             for n, (a, b) in enumerate(zip(row_a, row_b, strict=True))]  # fmt: skip
    only_ours = [(text, n) for a, b, text, n in pairs if not a and b]
    only_theirs = [(text, n) for a, b, text, n in pairs if a and not b]

    def shown(cases: list[tuple[str, int]]) -> list[str]:
        seen, out = set(), []
        for text, n in cases:
            if text not in seen:
                seen.add(text)
                out.append(f"{text} (token {n + 1})")
        return out[: args.examples]

    def whole(verdicts: list[list[bool]]) -> float:
        return sum(row[-1] == valid for row, valid in zip(verdicts, rdkit_valid, strict=True)) / len(texts)

    def wrong_by_group(verdicts: list[list[bool]]) -> dict[str, int]:
        wrong, start = {}, 0
        for name, group in groups.items():
            rows = zip(verdicts[start : start + len(group)], rdkit_valid[start : start + len(group)], strict=True)
            wrong[name], start = sum(row[-1] != valid for row, valid in rows), start + len(group)
        return wrong

    report = {
        "strings": len(texts),
        "moses_molecules": min(args.num_molecules, len(texts)),
        "prefixes": prefixes,
        "agreement": round(sum(a == b for a, b, _, _ in pairs) / prefixes, 4),
        "same_first_refusal": round(
            sum(first_refusal(a) == first_refusal(b) for a, b in zip(ours, theirs, strict=True)) / len(texts), 4
        ),
        "refused_by_polydiff_only": len(only_ours),
        "refused_by_partialsmiles_only": len(only_theirs),
        "examples_polydiff_only": shown(only_ours),
        "examples_partialsmiles_only": shown(only_theirs),
        "whole_string_matches_rdkit": {"polydiff": round(whole(ours), 4), "partialsmiles": round(whole(theirs), 4)},
        "strings_per_group": {name: len(group) for name, group in groups.items()},
        "whole_strings_judged_unlike_rdkit": {
            "polydiff": wrong_by_group(ours),
            "partialsmiles": wrong_by_group(theirs),
        },
        "moses_prefixes_refused": {
            "polydiff": sum(not ok for row in ours[: args.num_molecules] for ok in row),
            "partialsmiles": sum(not ok for row in theirs[: args.num_molecules] for ok in row),
        },
        "us_per_prefix": {
            "polydiff": round(1e6 * sum(ours_seconds.values()) / prefixes, 1),
            "polydiff_automaton": round(1e6 * ours_seconds["automaton"] / prefixes, 1),
            "polydiff_kekulization": round(1e6 * ours_seconds["kekulization"] / prefixes, 1),
            "partialsmiles": round(1e6 * theirs_seconds / prefixes, 1),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    with user_errors("benchmarks/constraints.py"):
        main()
