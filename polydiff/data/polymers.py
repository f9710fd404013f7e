"""Polymer corpora: PSMILES repeat units made from monomers by SMiPoly's polymerization rules.

SMiPoly (Ohno et al., J. Chem. Inf. Model. 2023, 63, 5539; the ``smipoly`` package, BSD-3)
sorts molecules into monomer classes by their functional groups (vinyl, lactam, diol,
diamine, ...) and applies polymerization reactions to them, one monomer or a pair at a time,
giving the repeat units of polymers that could be made from them.

Drug-like molecules (MOSES) hold plenty of vinyl monomers, diols, diamines and lactams but
almost none of the partners condensation polymers need: diacids, dianhydrides, diisocyanates,
diepoxides, activated dihalides. polydiff ships 62 commodity ones (``bundled/comonomers.csv``:
adipic and terephthalic acid, PMDA, MDI, bisphenol A diglycidyl ether, 4,4'-difluorobenzophenone,
...) and adds them to the candidates (``comonomers``), so that the MOSES diols and diamines make
polyesters, polyamides, polyimides, polyurethanes and polyethers as industry makes them. Pairs
of monomers grow with the square of their number (vinyl copolymers above all), so each class is
held to ``units_per_class`` units: the monomers offered to a class's reactions are thinned at
random (each kind of monomer to the same fraction) to about three reactions per unit kept, and
the units it makes are then drawn down to the cap. polydiff keeps the linear units (exactly two
``*``, each single-bonded: SMiPoly also writes network units), writes each as its canonical
PSMILES (``canonical_polymer``: one string however the chain is framed), keeps the first of any
repeats, and splits them into train, validation and test sets.

Building takes about six minutes for the default 50,000 MOSES molecules on 2 cores, so a
corpus is built once and kept under ``$POLYDIFF_CACHE_DIR/polymers/``, keyed by everything it
depends on: the monomers (file digest, or how many MOSES molecules), the co-monomers, the
classes, the cap, the split, the seed and the SMiPoly and RDKit versions. Change any of them
and the next run builds anew. pandas and SMiPoly (which loads its reaction rules on import) are
imported only to build.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np
from rich.progress import Progress

from polydiff.chem.molecules import canonical_polymer, is_polymer, map_molecules, parse
from polydiff.data.files import bundled_moses_path
from polydiff.types import POLYMER_CLASSES, PolymerClass
from polydiff.utils.arguments import refuse_mistyped_fields
from polydiff.utils.cache import cache_dir, file_digest
from polydiff.utils.files import existing_file, read_smiles
from polydiff.utils.parallel import default_jobs, progress_bars

SPLITS = ("train", "val", "test")
COLUMNS = ("SMILES", "class", "monomer1", "monomer2")
FORMAT_VERSION = 2  # bump when what a built corpus holds changes
CLASSIFY_CHUNK = 250  # molecules per SMiPoly classification call (one progress step)
REACTIONS_PER_UNIT = 3  # reactions tried per unit kept: some fail, some give networks or repeats
COMONOMERS = Path(__file__).parent / "bundled" / "comonomers.csv"


def bundled_comonomers() -> list[str]:
    """The SMILES of the bundled commodity co-monomers (``bundled/comonomers.csv``)."""
    with open(COMONOMERS, newline="") as stream:
        return [row["SMILES"] for row in csv.DictReader(stream)]


@dataclass
class PolymerCorpus:
    """What a polymer corpus is built from, and how it is split.

    Attributes:
        monomer_file: candidate monomers, one SMILES per line (.txt/.smi, or .csv with a
            ``SMILES`` column; .gz allowed); None takes the bundled MOSES training molecules.
        num_molecules: how many bundled MOSES molecules (from the start of the file) are offered
            as monomers when ``monomer_file`` is None; about 1 in 20 is one.
        comonomers: add the bundled commodity co-monomers (diacids, dianhydrides, diisocyanates,
            diepoxides, dihalides) to the candidates.
        classes: the polymer classes to generate.
        units_per_class: the most repeat units kept of each class (None: every one SMiPoly makes;
            vinyl copolymers then run to hundreds of thousands).
        val_fraction: share of the repeat units held out for validation.
        test_fraction: share held out for testing.
        seed: seed of the split.
        n_jobs: processes classifying monomers; None for every core.
    """

    monomer_file: str | None = None
    num_molecules: int = 50_000
    comonomers: bool = True
    classes: list[PolymerClass] = field(default_factory=lambda: list(POLYMER_CLASSES))
    units_per_class: int | None = 5_000
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 0
    n_jobs: int | None = None

    def __post_init__(self) -> None:
        refuse_mistyped_fields(self, "polymers.")
        if not self.classes:  # (a class outside them is refused above)
            raise ValueError(f"polymer classes []: choose from {', '.join(POLYMER_CLASSES)}")
        if min(self.val_fraction, self.test_fraction) <= 0 or self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction and test_fraction must be positive and sum to less than 1")
        if self.units_per_class is not None and self.units_per_class < 1:
            raise ValueError(f"units_per_class must be at least 1 (or null for no cap), got {self.units_per_class}")
        if self.monomer_file is not None:
            existing_file(self.monomer_file, "monomer file")

    def key(self) -> dict[str, object]:
        """Everything the built corpus depends on (its cache key)."""
        from rdkit import rdBase

        source = f"file:{file_digest(self.monomer_file)}" if self.monomer_file else f"moses-train:{self.num_molecules}"
        settings = {k: v for k, v in asdict(self).items() if k not in ("monomer_file", "num_molecules", "n_jobs")}
        settings["comonomers"] = file_digest(COMONOMERS) if self.comonomers else None
        versions = {"smipoly": metadata.version("smipoly"), "rdkit": rdBase.rdkitVersion, "format": FORMAT_VERSION}
        return {"monomers": source, **settings, "classes": sorted(self.classes), **versions}


def classify_monomers(smiles: list[str]) -> list[dict[str, object]]:
    """SMiPoly's monomer classes of some molecules: one row per molecule with at least one class.

    Each row holds ``smip_cand_mons`` (SMiPoly's canonical SMILES of the monomer) and one
    boolean column per monomer class. SMiPoly adds carbon monoxide and formaldehyde to every
    call (co-monomers of polycarbonates); the caller drops their repeats.
    """
    import pandas as pd
    from smipoly.smip import monc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas deprecation notes from inside SMiPoly
        table = monc.moncls(pd.DataFrame({"SMILES": smiles}), "SMILES")
    classes = [c for c in table.columns if c not in ("SMILES", "smip_cand_mons")]
    table = table.dropna(subset=["smip_cand_mons"])
    table = table[table[classes].astype(bool).any(axis=1)]
    return table.drop(columns="SMILES").to_dict("records")


def polymerize(
    monomers: list[str],
    classes: list[str],
    n_jobs: int = 1,
    progress: Progress | None = None,
    units_per_class: int | None = None,
    seed: int = 0,
) -> list[tuple[str, str, str, str]]:
    """Linear repeat units SMiPoly makes from ``monomers``, as canonical PSMILES, repeats removed.

    Args:
        monomers: candidate monomer SMILES (any molecule; most are not monomers).
        classes: polymer classes to generate (``POLYMER_CLASSES``).
        n_jobs: processes classifying the molecules and polymerizing the classes.
        progress: a rich ``Progress`` to draw bars on, or None.
        units_per_class: the most units kept of each class, drawn at random (None keeps all).
        seed: seed of the thinning and the draw.

    Returns:
        (PSMILES, polymer class, monomer 1, monomer 2 or "") for each distinct repeat unit, by
        class in the order given, in the order SMiPoly writes them within a class.
    """
    import pandas as pd

    chunks = [monomers[i : i + CLASSIFY_CHUNK] for i in range(0, len(monomers), CLASSIFY_CHUNK)]
    classified = map_molecules(classify_monomers, chunks, n_jobs, progress, "monomers", inline_below=2)
    rows = [row for chunk in classified for row in chunk]
    table = pd.DataFrame(rows).drop_duplicates(subset="smip_cand_mons", ignore_index=True)
    made = partial(_class_units, table=table, units_per_class=units_per_class, seed=seed)
    by_class = map_molecules(made, classes, n_jobs, progress, "polymer classes", inline_below=2)
    distinct: dict[str, tuple[str, str, str, str]] = {}
    for units in by_class:
        for row in units:
            distinct.setdefault(row[0], row)
    return list(distinct.values())


def _reactions(table, polymer_class: str) -> int:
    """How many reactions SMiPoly tries for ``polymer_class`` on a table of classified monomers."""
    from smipoly.smip import polg

    count = 0
    for first, second, _ in polg.Ps_GenL[polymer_class]:
        n_first = int(table[first].astype(bool).sum()) if first in table else 0
        n_second = 1 if second == "none" else int(table[second].astype(bool).sum()) if second in table else 0
        count += n_first * n_second
    return count


def _thinned(table, polymer_class: str, budget: int, seed: int):
    """A seeded random subset of ``table`` on which ``polymer_class`` needs at most ``budget``
    reactions (the whole table when it needs no more).

    Each kind of monomer the class's reactions use is thinned to the same fraction, rounded up,
    so a kind with few members (one diol among hundreds of diacids) keeps at least one.
    """
    from smipoly.smip import polg

    if _reactions(table, polymer_class) <= budget:
        return table
    rng = np.random.default_rng(seed)
    kinds = sorted({kind for first, second, _ in polg.Ps_GenL[polymer_class] for kind in (first, second)} & set(table))
    orders = [rng.permutation(np.flatnonzero(table[kind].astype(bool).to_numpy())) for kind in kinds]

    def subset(fraction: float):
        rows = {int(row) for order in orders for row in order[: math.ceil(fraction * len(order))]}
        return table.iloc[sorted(rows)]

    low, high = 0.0, 1.0  # reactions(subset(low)) <= budget < reactions(subset(high))
    for _ in range(24):
        middle = (low + high) / 2
        low, high = (middle, high) if _reactions(subset(middle), polymer_class) <= budget else (low, middle)
    return subset(low)


def _class_units(polymer_class: str, table, units_per_class: int | None, seed: int) -> list[tuple[str, str, str, str]]:
    """The distinct linear units of one class: (PSMILES, class, monomer 1, monomer 2 or "")."""
    from smipoly.smip import polg

    if units_per_class is not None:
        table = _thinned(table, polymer_class, REACTIONS_PER_UNIT * units_per_class, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas deprecation notes from inside SMiPoly
        made = polg.biplym(table, targ=[polymer_class]) if len(table) else None
    distinct: dict[str, tuple[str, str, str, str]] = {}
    if made is not None:
        for psmiles, mon1, mon2 in made[["polym", "mon1", "mon2"]].itertuples(index=False):
            unit = linear_unit(psmiles)
            if unit is not None:
                distinct.setdefault(unit, (unit, polymer_class, mon1, mon2 or ""))
    units = list(distinct.values())
    if units_per_class is not None and len(units) > units_per_class:
        keep = np.random.default_rng(seed).choice(len(units), units_per_class, replace=False)
        units = [units[i] for i in sorted(keep)]
    return units


def linear_unit(psmiles: str) -> str | None:
    """The canonical PSMILES of a linear repeat unit (two ``*``, single-bonded), None for anything else."""
    mol = parse(psmiles)
    return canonical_polymer(mol) if is_polymer(mol) else None


def split(units: list, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list]:
    """A seeded random split into ``train``, ``val`` and ``test`` (each at least one unit when possible)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(units))
    n_val = max(1, round(val_fraction * len(units))) if len(units) >= 3 else 0
    n_test = max(1, round(test_fraction * len(units))) if len(units) >= 3 else 0
    parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    return {name: [units[i] for i in sorted(part)] for name, part in parts.items()}


def corpus_files(corpus: PolymerCorpus, progress: bool | None = None) -> dict[str, Path]:
    """The train/val/test CSV files of a polymer corpus, built on first use and cached.

    Args:
        corpus: what to build it from.
        progress: draw progress bars; None draws them when stderr is a terminal.

    Returns:
        ``{"train": path, "val": path, "test": path}``; each CSV has the columns
        SMILES (canonical PSMILES), class, monomer1, monomer2.
    """
    key = corpus.key()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir() / "polymers" / digest
    files = {name: folder / f"{name}.csv" for name in SPLITS}
    if (folder / "corpus.json").is_file():
        print(f"polydiff: polymer corpus {folder} (built before, reused)", file=sys.stderr)
        return files
    _build(corpus, key, folder, sys.stderr.isatty() if progress is None else progress)
    return files


def _build(corpus: PolymerCorpus, key: dict[str, object], folder: Path, progress: bool) -> None:
    started = time.perf_counter()
    if corpus.monomer_file:
        monomers = read_smiles(corpus.monomer_file)
    else:
        monomers = read_smiles(bundled_moses_path("train"))[: corpus.num_molecules]
    source = corpus.monomer_file or f"the first {len(monomers):,} bundled MOSES training molecules"
    if corpus.comonomers:
        monomers += bundled_comonomers()
        source += " and the bundled co-monomers"
    print(f"polydiff: building a polymer corpus from {source} with SMiPoly (once; cached in {folder})", file=sys.stderr)
    with progress_bars(progress) as bars:
        jobs = corpus.n_jobs or default_jobs()
        units = polymerize(monomers, corpus.classes, jobs, bars, corpus.units_per_class, corpus.seed)
    if not units:
        raise ValueError(f"SMiPoly made no linear repeat unit of {corpus.classes} from {source}")
    parts = split(units, corpus.val_fraction, corpus.test_fraction, corpus.seed)
    # Written into a private folder, then renamed into place: a killed build leaves no half corpus.
    building = folder.with_name(f".{folder.name}.{os.getpid()}.building")
    building.mkdir(parents=True, exist_ok=True)
    for name, rows in parts.items():
        with open(building / f"{name}.csv", "w", newline="") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(COLUMNS)
            writer.writerows(rows)
    counts = {c: sum(row[1] == c for row in units) for c in corpus.classes}
    info = {
        "key": key,
        "source": source,
        "molecules": len(monomers),
        "repeat_units": len(units),
        "by_class": counts,
        "splits": {n: len(r) for n, r in parts.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    (building / "corpus.json").write_text(json.dumps(info, indent=2) + "\n")
    try:
        os.replace(building, folder)
    except OSError:  # another run finished the same corpus first: keep theirs
        shutil.rmtree(building, ignore_errors=True)
    print(
        f"polydiff: {len(units):,} repeat units ({', '.join(f'{c} {n:,}' for c, n in counts.items())}) "
        f"in {info['seconds']} s: {folder}",
        file=sys.stderr,
    )
