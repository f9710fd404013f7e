"""Design benchmark: property guidance and fragment-constrained generation, scored with RDKit.

    python benchmarks/design.py --ckpt_path runs/conditioned/lightning_logs/version_0/checkpoints/best.ckpt

Guidance (a checkpoint trained with ``data.conditions``, ``recipes/conditions.yaml``): for each
target (logP 1, 3, 5; QED 0.9; MW 250, 450) and guidance scale w in {0, 1, 2, 4}, with steering
(its default width, ``polydiff.sampling.steering``) and without, ``--num_samples`` molecules:
valid (strict: the string as sampled), unique and novel (against the bundled MOSES training set)
among the valid, the mean absolute error of the valid ones to the target, the fraction of all
samples within the tolerance (logP 0.5, QED 0.05, MW 25; an invalid sample misses), and model
calls per token. The same checkpoint sampled without a condition gives the unconditional row,
scored against every target. A target outside what the checkpoint was trained on is refused by
polydiff and reported as such.

Fragments (``--fragment_ckpt_path``, default the same checkpoint): cases cut from MOSES test
molecules with a fixed seed, ``--cases`` per task: extend a motif (one cut bond with 5 or more
atoms on its smaller side, the larger kept), link two fragments (two cut bonds, the two end pieces
kept, 1 to 5 atoms between them) and decorate a scaffold (the Bemis-Murcko scaffold with its side
chains replaced by [*], two or three of them), and extend five small groups (``GROUPS``: CF3,
CHF2, tBu, NMe2, OMe), whatever ``--cases`` says. ``--fragment_samples`` per case:
valid, fragments kept among the valid, unique among the valid, quality (GenMol's: unique valid
molecules with QED >= 0.6 and SA <= 4, over all samples) and diversity (mean pairwise Tanimoto
distance of the valid ones' Morgan fingerprints), averaged over the cases.

Polymer classes (``--polymer_ckpt_path``, a checkpoint of ``recipes/data/polymers.yaml``, which
conditions on the class): for each class the checkpoint offers and w in {0, 0.5, 1, 3},
``--num_samples`` units asked for with ``--condition class=NAME``; polymer-valid (two ``*``,
each single-bonded, the string as sampled), the fraction of the polymer-valid ones in the
requested class (read off the backbone, ``polydiff.chem.polymer_classes``) and unique among them,
next to the class shares of the same checkpoint sampled without a condition.

Writes design.json and design.md (the tables of docs/design.md) into ``--output_dir`` and prints the JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.Scaffolds import MurckoScaffold

from polydiff.chem.conditions import property_values
from polydiff.chem.fragments import keeps_fragments
from polydiff.chem.molecules import canonical, canonical_sample, parse, quiet_rdkit
from polydiff.chem.polymer_classes import polymer_class
from polydiff.commands import positive, user_errors
from polydiff.data.files import bundled_moses_path
from polydiff.sampling.generate import Generation, generate
from polydiff.tasks.inference import load
from polydiff.utils.digest_set import DigestSet
from polydiff.utils.files import read_smiles

TARGETS = [("logp", 1.0), ("logp", 3.0), ("logp", 5.0), ("qed", 0.9), ("mw", 250.0), ("mw", 450.0)]
TOLERANCE = {"logp": 0.5, "qed": 0.05, "mw": 25.0}
SCALES = [0.0, 1.0, 2.0, 4.0]
CLASS_SCALES = [0.0, 0.5, 1.0, 3.0]


def _nfe_per_token(result: Generation) -> float:
    """Model calls per generated token, [SEP] counted (a guided call counts two)."""
    return float(result.nfe.float().sum() / (result.lengths.float() + 1).sum())


def _fraction(count: int, total: int) -> float:
    return count / total if total else math.nan


def guidance_scores(samples: list[str], target: tuple[str, float], train: DigestSet) -> dict[str, float]:
    """valid, unique, novelty, mean absolute error and within-tolerance fraction of samples for one target."""
    name, value = target
    valid = [c for c in map(canonical, samples) if c is not None]
    values = property_values(valid, [name])[:, 0] if valid else np.zeros(0)
    error = np.abs(values - value)
    distinct = set(valid)
    return {
        "valid": _fraction(len(valid), len(samples)),
        "unique": _fraction(len(distinct), len(valid)),
        "novelty": _fraction(sum(c not in train for c in distinct), len(distinct)),
        "mae": float(np.nanmean(error)) if len(error) else math.nan,
        "within": _fraction(int((error <= TOLERANCE[name]).sum()), len(samples)),
    }


def guidance(args: argparse.Namespace, train: DigestSet) -> dict:
    task = load(args.ckpt_path, args.device)
    if not task.conditions:
        return {"skipped": f"{args.ckpt_path} was trained without conditions"}
    report: dict = {"checkpoint": args.ckpt_path, "num_samples": args.num_samples, "rows": []}
    free = generate(task, args.num_samples, batch_size=args.batch_size, seed=args.seed)
    for target in TARGETS:
        row = {
            "property": target[0],
            "target": target[1],
            "unconditional": {**guidance_scores(free, target, train), "nfe_per_token": _nfe_per_token(free)},
        }
        for scale in SCALES:
            try:
                default = task.guided({target[0]: target[1]}, scale)  # steered at the default width where it can
            except ValueError as error:
                row["refused"] = str(error)
                break
            models = {"unsteered": default}  # nothing to steer with: the one row
            if default.steering is not None:
                models = {"steered": default, "unsteered": task.guided({target[0]: target[1]}, scale, 0.0)}
            for name, model in models.items():
                result = generate(model, args.num_samples, batch_size=args.batch_size, seed=args.seed)
                scores = guidance_scores(result, target, train)
                scores["nfe_per_token"] = _nfe_per_token(result)
                row[f"w={scale:g} {name}"] = scores
                print(f"guidance {target[0]}={target[1]:g} w={scale:g} {name}: {scores}", file=sys.stderr, flush=True)
        report["rows"].append(row)
    return report


def _pieces(mol: Chem.Mol, bonds: list[int]) -> list[Chem.Mol]:
    cut = Chem.FragmentOnBonds(mol, bonds, addDummies=True, dummyLabels=[(0, 0)] * len(bonds))
    return list(Chem.GetMolFrags(cut, asMols=True))


def _text(mol: Chem.Mol) -> str:
    return Chem.MolToSmiles(mol).replace("*", "[*]")


def _heavy(mol: Chem.Mol) -> int:
    return sum(atom.GetAtomicNum() > 0 for atom in mol.GetAtoms())


# Small terminal groups a chemist extends, written after the molecule the model writes
# (``polydiff.chem.fragments.SMALL_GROUP``): written first, CF3 came out as CF4.
GROUPS = ["[*]C(F)(F)F", "[*]C(F)F", "[*]C(C)(C)C", "[*]N(C)C", "[*]OC"]


def fragment_cases(count: int, seed: int) -> dict[str, list[str]]:
    """``count`` requests per task cut from MOSES test molecules (shuffled with ``seed``), and the
    fixed small ``GROUPS`` to extend."""
    test = read_smiles(bundled_moses_path("test"), "SMILES")
    random.Random(seed).shuffle(test)
    cases: dict[str, list[str]] = {"extend": [], "link": [], "decorate": []}
    for smiles in test:
        if all(len(found) >= count for found in cases.values()):
            break
        mol = parse(smiles)
        if mol is None:
            continue
        cuttable = [
            bond.GetIdx()
            for bond in mol.GetBonds()
            if not bond.IsInRing()
            and bond.GetBondType() == Chem.BondType.SINGLE
            and min(bond.GetBeginAtom().GetDegree(), bond.GetEndAtom().GetDegree()) > 1
        ]
        if len(cases["extend"]) < count:
            for bond in cuttable:  # a motif of 6+ atoms, extended by 5+ atoms in the molecule it came from
                small, large = sorted(_pieces(mol, [bond]), key=_heavy)
                if _heavy(small) >= 5 and _heavy(large) >= 6:
                    cases["extend"].append(_text(large))
                    break
        if len(cases["link"]) < count:
            for pair in itertools.combinations(cuttable, 2):
                pieces = _pieces(mol, list(pair))
                ends = [p for p in pieces if sum(a.GetAtomicNum() == 0 for a in p.GetAtoms()) == 1]
                middle = [p for p in pieces if sum(a.GetAtomicNum() == 0 for a in p.GetAtoms()) == 2]
                if len(ends) == 2 and middle and 1 <= _heavy(middle[0]) <= 5 and min(map(_heavy, ends)) >= 4:
                    cases["link"].append(".".join(_text(p) for p in ends))
                    break
        if len(cases["decorate"]) < count:
            scaffold = MurckoScaffold.GetScaffoldForMol(mol)
            decorated = Chem.ReplaceSidechains(mol, scaffold) if scaffold.GetNumAtoms() else None
            if decorated is not None:
                for atom in decorated.GetAtoms():
                    atom.SetIsotope(0)
                if 2 <= sum(a.GetAtomicNum() == 0 for a in decorated.GetAtoms()) <= 3:
                    cases["decorate"].append(_text(decorated))
    return {**cases, "extend a group": GROUPS}


def _diversity(valid: list[str]) -> float:
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    fingerprints = [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in set(valid)]
    if len(fingerprints) < 2:
        return math.nan
    similarities = [
        np.mean(DataStructs.BulkTanimotoSimilarity(f, fingerprints[:i] + fingerprints[i + 1 :]))
        for i, f in enumerate(fingerprints)
    ]
    return float(1 - np.mean(similarities))


def fragment_scores(samples: list[str], request: str) -> dict[str, float]:
    valid = [c for c in map(canonical, samples) if c is not None]
    kept = [c for c in valid if keeps_fragments(c, request.split("."))]
    distinct = sorted(set(valid))
    qed, sa = property_values(distinct, ["qed", "sa"]).T if distinct else (np.zeros(0), np.zeros(0))
    return {
        "valid": _fraction(len(valid), len(samples)),
        "kept": _fraction(len(kept), len(valid)),
        "unique": _fraction(len(distinct), len(valid)),
        "quality": _fraction(int(((qed >= 0.6) & (sa <= 4)).sum()), len(samples)),
        "diversity": _diversity(valid),
    }


def fragments(args: argparse.Namespace) -> dict:
    task = load(args.fragment_ckpt_path or args.ckpt_path, args.device)
    report: dict = {"checkpoint": args.fragment_ckpt_path or args.ckpt_path, "samples_per_case": args.fragment_samples}
    for name, requests in fragment_cases(args.cases, args.seed).items():
        rows = []
        for request in requests:
            start = time.perf_counter()
            result = generate(
                task, args.fragment_samples, batch_size=args.batch_size, seed=args.seed, fragments=request
            )
            scores = fragment_scores(result, request)
            scores["nfe_per_token"] = _nfe_per_token(result)
            scores["seconds"] = time.perf_counter() - start
            rows.append({"fragments": request, **scores})
            print(f"fragments {name} {request}: {scores}", file=sys.stderr, flush=True)
        keys = ["valid", "kept", "unique", "quality", "diversity", "nfe_per_token"]
        report[name] = {"cases": rows, "mean": {key: float(np.nanmean([row[key] for row in rows])) for key in keys}}
    return report


def class_scores(result: Generation, wanted: str | None) -> dict:
    """polymer_valid, the in-class fraction and unique fraction of the polymer-valid, the class
    shares, and model calls per token."""
    units = []
    for sample in result:
        unit, is_unit = canonical_sample(sample, polymer=True)
        if is_unit:
            units.append(unit)
    classes = [polymer_class(parse(unit)) for unit in units]
    shares = {name: _fraction(classes.count(name), len(classes)) for name in sorted(set(classes), key=str)}
    scores = {
        "polymer_valid": _fraction(len(units), len(result)),
        "unique": _fraction(len(set(units)), len(units)),
        "nfe_per_token": _nfe_per_token(result),
    }
    if wanted is not None:
        scores["in_class"] = _fraction(classes.count(wanted), len(units))
    return {**scores, "shares": {str(name): share for name, share in shares.items()}}


def polymer_classes(args: argparse.Namespace) -> dict:
    task = load(args.polymer_ckpt_path, args.device)
    if "class" not in task.conditions:
        return {"skipped": f"{args.polymer_ckpt_path} was not trained with the class condition"}
    columns = [k for k, column in enumerate(task.condition_columns) if column.startswith("class=")]
    trained_on = {task.condition_columns[k][len("class=") :]: task.condition_statistics[3, k].item() for k in columns}
    report: dict = {"checkpoint": args.polymer_ckpt_path, "num_samples": args.num_samples, "trained_on": trained_on}
    unconditional = generate(task, args.num_samples, batch_size=args.batch_size, seed=args.seed)
    report["unconditional"] = class_scores(unconditional, None)
    report["rows"] = []
    for name, count in trained_on.items():
        row: dict = {"class": name, "training_units": count}
        for scale in CLASS_SCALES:
            try:
                model = task.guided({"class": name}, scale)
            except ValueError as error:
                row["refused"] = str(error)
                break
            result = generate(model, args.num_samples, batch_size=args.batch_size, seed=args.seed)
            row[f"w={scale:g}"] = class_scores(result, name)
            print(f"class {name} w={scale:g}: {row[f'w={scale:g}']}", file=sys.stderr, flush=True)
        report["rows"].append(row)
    return report


def markdown(report: dict) -> str:
    lines = []
    guided = report.get("guidance", {})
    if "rows" in guided:
        lines += [
            f"Guidance ({guided['num_samples']} samples per row; MAE over the valid samples, "
            "within: fraction of all samples)",
            "",
            "| target | w | steering | valid | unique | novelty | MAE | within | NFE/token |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in guided["rows"]:
            label = f"{row['property']} = {row['target']:g}"
            cells = [("unconditional", "", row["unconditional"])]
            cells += [(*key[2:].split(" "), row[key]) for key in row if key.startswith("w=")]
            for w, steering, s in cells:
                keys = ("valid", "unique", "novelty", "mae", "within", "nfe_per_token")
                numbers = " | ".join(f"{s[key]:.3f}" if key in s else "" for key in keys)
                lines.append(f"| {label} | {w} | {steering} | {numbers} |")
            if "refused" in row:
                lines.append(f"| {label} | refused | | {row['refused']} | | | | | |")
        lines.append("")
    frags = report.get("fragments", {})
    if frags:
        lines += [
            f"Fragments ({frags['samples_per_case']} samples per case, mean over cases)",
            "",
            "| task | cases | valid | kept | unique | quality | diversity | NFE/token |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in ("extend", "link", "decorate", "extend a group"):
            if name in frags:
                mean = frags[name]["mean"]
                keys = ("valid", "kept", "unique", "quality", "diversity", "nfe_per_token")
                numbers = " | ".join(f"{mean[key]:.3f}" for key in keys)
                lines.append(f"| {name} | {len(frags[name]['cases'])} | {numbers} |")
        lines.append("")
    polymers = report.get("polymers", {})
    if "rows" in polymers:
        free = polymers["unconditional"]
        lines += [
            f"Polymer classes ({polymers['num_samples']} samples per row; in class and unique among the "
            "polymer-valid; unconditional: the share of the class in samples without a condition)",
            "",
            "| class | training units | w | polymer valid | in class | unique | NFE/token |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in polymers["rows"]:
            label = f"| {row['class']} | {row['training_units']:,.0f} |"
            share = free["shares"].get(row["class"], 0.0)
            cells = (free["polymer_valid"], share, free["unique"], free["nfe_per_token"])
            lines.append(f"{label} unconditional | {' | '.join(f'{cell:.3f}' for cell in cells)} |")
            for key in (key for key in row if key.startswith("w=")):
                names = ("polymer_valid", "in_class", "unique", "nfe_per_token")
                numbers = " | ".join(f"{row[key][name]:.3f}" for name in names)
                lines.append(f"{label} {key[2:]} | {numbers} |")
            if "refused" in row:
                lines.append(f"{label} refused | {row['refused']} | | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", default=None, help="a checkpoint trained with data.conditions")
    parser.add_argument(
        "--fragment_ckpt_path", default=None, help="the checkpoint for the fragment tasks (default: --ckpt_path)"
    )
    parser.add_argument("--num_samples", type=positive(int), default=200, help="samples per guidance row")
    parser.add_argument("--cases", type=positive(int), default=5, help="fragment cases per task")
    parser.add_argument("--fragment_samples", type=positive(int), default=40, help="samples per fragment case")
    parser.add_argument("--batch_size", type=positive(int), default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--polymer_ckpt_path", default=None, help="a polymer checkpoint conditioned on the class (data/polymers.yaml)"
    )
    parser.add_argument(
        "--skip", choices=["guidance", "fragments"], nargs="*", default=[], help="leave these parts out"
    )
    parser.add_argument("--output_dir", default="runs/design")
    args = parser.parse_args()
    quiet_rdkit()
    torch.manual_seed(args.seed)
    if args.ckpt_path is None and args.polymer_ckpt_path is None:
        parser.error("give --ckpt_path, --polymer_ckpt_path or both")
    skip = set(args.skip) | ({"guidance", "fragments"} if args.ckpt_path is None else set())
    report: dict = {}
    if "fragments" not in skip:
        report["fragments"] = fragments(args)
    if args.polymer_ckpt_path is not None:
        report["polymers"] = polymer_classes(args)
    if "guidance" not in skip:
        train = DigestSet(read_smiles(bundled_moses_path("train"), "SMILES"))  # MOSES lines are canonical
        report["guidance"] = guidance(args, train)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A row with no valid sample has no rate: null, not NaN, which strict JSON parsers refuse.
    written = json.dumps(_null_for_nan(report), indent=2, allow_nan=False)
    (out / "design.json").write_text(written)
    (out / "design.md").write_text(markdown(report))
    print(written)


def _null_for_nan(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _null_for_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_null_for_nan(item) for item in value]
    return value


if __name__ == "__main__":
    with user_errors("benchmarks/design.py"):
        main()
