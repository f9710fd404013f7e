"""Polymer corpora from monomers with SMiPoly: classes, canonical repeat units, splits and the cache."""

import csv
import json
from dataclasses import replace

import pytest

from polydiff.chem.conditions import condition_columns
from polydiff.chem.molecules import canonical_polymer, is_polymer, parse
from polydiff.data.datamodule import MoleculeDataModule
from polydiff.data.polymers import (
    POLYMER_CLASSES,
    PolymerCorpus,
    bundled_comonomers,
    corpus_files,
    linear_unit,
    polymerize,
    split,
)

# Textbook monomers, and the repeat unit each pair is known to give (checked by hand).
MONOMERS = {
    "styrene": "C=Cc1ccccc1",
    "methyl acrylate": "C=CC(=O)OC",
    "vinyl chloride": "C=CCl",
    "caprolactam": "O=C1CCCCCN1",
    "ethylene oxide": "C1CO1",
    "ethylene glycol": "OCCO",
    "adipic acid": "OC(=O)CCCCC(=O)O",
    "hexamethylenediamine": "NCCCCCCN",
    "hexamethylene diisocyanate": "O=C=NCCCCCCN=C=O",
    "aspirin (no monomer)": "CC(=O)Oc1ccccc1C(=O)O",
}
EXPECTED = {
    ("polystyrene", "polyolefin"): "*CC(*)c1ccccc1",
    ("poly(vinyl chloride)", "polyolefin"): "*CC(*)Cl",
    ("poly(styrene-alt-methyl acrylate)", "polyolefin"): "*CC(CC(*)C(=O)OC)c1ccccc1",
    ("nylon-6", "polyamide"): "*NCCCCCC(*)=O",
    ("nylon-6,6", "polyamide"): "*NCCCCCCNC(=O)CCCCC(*)=O",
    ("poly(ethylene oxide)", "polyether"): "*CCO*",
    ("poly(ethylene adipate)", "polyester"): "*OCCOC(=O)CCCCC(*)=O",
    ("poly(ethylene carbonate)", "polyester"): "*OCCOC(*)=O",
    ("the HDI-glycol polyurethane", "polyurethane"): "*OCCOC(=O)NCCCCCCNC(*)=O",
}


@pytest.fixture(scope="module")
def units() -> dict[str, tuple[str, str, str, str]]:
    return {row[0]: row for row in polymerize(list(MONOMERS.values()), list(POLYMER_CLASSES))}


@pytest.mark.parametrize(("name", "polymer_class"), list(EXPECTED), ids=[name for name, _ in EXPECTED])
def test_textbook_monomers_give_their_polymers(units, name, polymer_class):
    unit = canonical_polymer(parse(EXPECTED[name, polymer_class]))
    assert unit in units, f"{name} missing"
    assert units[unit][1] == polymer_class


def test_every_unit_is_a_distinct_canonical_linear_repeat_unit(units):
    assert len(units) >= len(EXPECTED)
    for unit, (_, _, monomer1, _) in units.items():
        assert is_polymer(parse(unit)) and linear_unit(unit) == unit
        assert monomer1 != MONOMERS["aspirin (no monomer)"]


def test_classes_can_be_chosen():
    made = polymerize(list(MONOMERS.values()), ["polyamide", "polyether"])
    assert {row[1] for row in made} == {"polyamide", "polyether"}
    assert canonical_polymer(parse("*CCO*")) in {row[0] for row in made}


def test_the_bundled_comonomers_make_condensation_polymers_and_each_class_is_capped():
    diol, diamine = MONOMERS["ethylene glycol"], MONOMERS["hexamethylenediamine"]
    made = polymerize([diol, diamine, *bundled_comonomers()], ["polyester", "polyimide", "polyurethane"])
    counts = {c: sum(row[1] == c for row in made) for c in ("polyester", "polyimide", "polyurethane")}
    assert min(counts.values()) >= 5  # glycol with the diacids and diisocyanates, the diamine with the dianhydrides
    capped = polymerize([diol, diamine, *bundled_comonomers()], ["polyester", "polyimide"], units_per_class=3, seed=1)
    assert [sum(row[1] == c for row in capped) for c in ("polyester", "polyimide")] == [3, 3]
    assert {row[0] for row in capped} <= {row[0] for row in made}
    again = polymerize([diol, diamine, *bundled_comonomers()], ["polyester", "polyimide"], units_per_class=3, seed=1)
    assert again == capped  # seeded


def test_network_units_are_left_out():
    # A diallyl monomer polymerizes through both double bonds: four "*", a network, not a chain.
    assert linear_unit("*CC(*)CN(CC(*)C*)C(=O)C") is None
    assert linear_unit("CC*") is None and linear_unit("not a smiles") is None


def test_split_is_seeded_disjoint_and_complete():
    items = [f"u{i:03d}" for i in range(100)]
    parts = split(items, 0.1, 0.2, seed=3)
    assert [len(parts[name]) for name in ("train", "val", "test")] == [70, 10, 20]
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == items
    assert split(items, 0.1, 0.2, seed=3) == parts and split(items, 0.1, 0.2, seed=4) != parts


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"classes": ["polyketone"]}, r"polymers.classes must be a list \(each item one of polyolefin, polyester"),
        ({"classes": []}, "polymer classes"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "sum to less than 1"),
        ({"monomer_file": "missing.smi"}, "monomer file not found"),
        ({"units_per_class": 0}, "units_per_class"),
    ],
)
def test_bad_corpus_options_are_clear_errors(options, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        PolymerCorpus(**options)


@pytest.fixture
def monomer_file(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "monomers.smi"
    path.write_text("\n".join(MONOMERS.values()) + "\n")
    return path


def test_corpus_is_built_once_and_rebuilt_when_its_inputs_change(monomer_file, capsys):
    corpus = PolymerCorpus(monomer_file=str(monomer_file), comonomers=False, val_fraction=0.2, test_fraction=0.2)
    files = corpus_files(corpus, progress=False)
    assert "building a polymer corpus" in capsys.readouterr().err
    info = json.loads((files["train"].parent / "corpus.json").read_text())
    rows = {name: list(csv.DictReader(path.open())) for name, path in files.items()}
    assert info["repeat_units"] == sum(len(r) for r in rows.values()) and all(rows.values())
    assert all(row["SMILES"].count("*") == 2 and row["class"] in POLYMER_CLASSES for r in rows.values() for row in r)

    assert corpus_files(corpus, progress=False) == files  # the same options: the cached corpus
    assert "building" not in capsys.readouterr().err

    assert corpus_files(PolymerCorpus(monomer_file=str(monomer_file), classes=["polyamide"]))["train"] != files["train"]
    assert corpus_files(replace(corpus, comonomers=True), progress=False)["train"] != files["train"]
    monomer_file.write_text("C=Cc1ccccc1\nC=CCl\nC=CC#N\nO=C1CCCCCN1\n")  # new monomers, same file name
    assert corpus_files(corpus, progress=False)["train"] != files["train"]
    assert "building" in capsys.readouterr().err


def test_datamodule_reads_the_corpus_splits(monomer_file):
    corpus = PolymerCorpus(monomer_file=str(monomer_file), val_fraction=0.2, test_fraction=0.2)
    data = MoleculeDataModule(kind="polymer", polymers=corpus, representation="selfies", token_cache=False)
    data.setup()
    assert data.train_smiles and data.val_smiles and data.test_smiles
    assert not set(data.train_smiles) & (set(data.val_smiles) | set(data.test_smiles))
    assert all(line.count("*") == 2 for line in [*data.train_smiles, *data.val_smiles, *data.test_smiles])
    batch = data.collate(list(data.train_smiles))
    assert batch["input_ids"].shape[0] == len(data.train_smiles)  # every unit tokenizes, none dropped


def test_datamodule_drops_user_lines_that_are_not_repeat_units(tmp_path):
    train = tmp_path / "psmiles.csv"
    # Two * do not make a unit: a double bond to one, none between them, or no backbone joining them.
    two_stars = "double,*=CC*\nnothing between,**\nno backbone,*C.C*\n"
    lines = f"PS,*CC(*)c1ccccc1\nend group,CC*\nPEO,[*]CCO[*]\nbranched,*C(*)(*)C\n{two_stars}"
    train.write_text("name,PSMILES\n" + lines * 10)
    options = {"smiles_column": "PSMILES", "kind": "polymer", "val_size": 5}
    for cached in (True, False):  # the lines themselves, last
        data = MoleculeDataModule(train_file=str(train), **options, token_cache=cached)
        data.prepare_data()
        data.setup("fit")
        assert len(data.train_smiles) + len(data.val_smiles) == 20, cached  # 10 each of PS and PEO
    assert sorted({*data.train_smiles, *data.val_smiles}) == ["*CC(*)c1ccccc1", "[*]CCO[*]"]
    with pytest.raises(ValueError, match=r"data\.test_file"):
        data.setup("test")


def test_validation_novelty_reads_user_units_in_their_canonical_form(tmp_path):
    # Written framed as it comes, bracketed or labelled: each is one of the units sampled canonical.
    train = tmp_path / "psmiles.smi"
    train.write_text("*CCCCCC(=O)N*\n[*]OCC[*]\n[*:1]CC([*:2])c1ccccc1\n" * 10)
    data = MoleculeDataModule(train_file=str(train), kind="polymer", val_size=3, token_cache=False)
    data.setup("fit")
    reference = data.novelty_reference()
    for unit in ("*CCCCCC(=O)N*", "*OCC*", "*CC(*)c1ccccc1"):
        assert canonical_polymer(parse(unit)) in reference, unit


def test_a_class_counts_its_share_of_every_training_unit_not_of_the_classified_ones(tmp_path):
    # 30 polyamide units and 70 siloxanes, which have no class: polyamide stands for 30% of the set.
    train = tmp_path / "mixed.smi"
    train.write_text("*NCCCCCC(*)=O\n" * 30 + "*O[Si](*)(C)C\n" * 70)
    data = MoleculeDataModule(
        train_file=str(train), kind="polymer", conditions=["class"], val_size=10, token_cache=False
    )
    data.setup("fit")
    statistics = data.condition_statistics()
    polyamide = condition_columns(["class"]).index("class=polyamide")
    share = list(data.train_smiles).count("*NCCCCCC(*)=O") / len(data.train_smiles)
    assert statistics[0, polyamide] == pytest.approx(share) and 0.2 < share < 0.4
    assert statistics[3, polyamide] == pytest.approx(share * len(data.train_smiles))
