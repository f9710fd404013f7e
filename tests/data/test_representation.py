"""SMILES and SELFIES representations: round trips on real molecules and polymers, the bundled SELFIES tokenizer."""

import random

import pytest
from rdkit import Chem
from tokenizers import Tokenizer

from polydiff.data.batching import MoleculeCollator
from polydiff.data.representation import get_representation
from polydiff.data.tokenizer import (
    SPECIAL_TOKENS,
    build_selfies_tokenizer,
    bundled_tokenizer_path,
    load_tokenizer,
    selfies_vocabulary,
)


def canonical(smiles: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


def test_selfies_round_trip_keeps_every_moses_molecule(moses_sample):
    selfies = get_representation("selfies")
    for smiles in moses_sample[:300]:
        assert canonical(selfies.to_smiles(selfies.to_model(smiles))) == canonical(smiles)


def test_polymer_attachment_points_survive_selfies():
    selfies = get_representation("selfies")
    for psmiles in ("*CC(*)c1ccccc1", "[*]OCC[*]", "*C(=O)Nc1ccc(*)cc1"):
        encoded = selfies.to_model(psmiles)
        assert "[At]" in encoded and "*" not in encoded
        back = selfies.to_smiles(encoded)
        assert back.count("*") == 2
        assert canonical(back) == canonical(psmiles.replace("[*]", "*"))


def test_random_strings_of_the_bundled_vocabulary_decode_to_parsable_molecules():
    selfies = get_representation("selfies")
    alphabet = [t for t in selfies_vocabulary() if t not in SPECIAL_TOKENS]
    rng = random.Random(0)
    for _ in range(500):
        smiles = selfies.to_smiles("".join(rng.choices(alphabet, k=30)))
        molecule = Chem.MolFromSmiles(smiles)
        assert molecule is not None, smiles
        # The placeholder is monovalent, so an attachment point always ends a chain.
        assert all(atom.GetDegree() == 1 for atom in molecule.GetAtoms() if atom.GetSymbol() == "*")


def test_smiles_representation_is_the_identity():
    smiles = get_representation("smiles")
    assert smiles.to_model("c1ccccc1") == smiles.to_smiles("c1ccccc1") == "c1ccccc1"
    with pytest.raises(ValueError, match="unknown representation"):
        get_representation("inchi")


def test_bundled_selfies_tokenizer_is_built_by_code():
    bundled = Tokenizer.from_file(str(bundled_tokenizer_path("selfies")))
    assert bundled.to_str() == build_selfies_tokenizer().to_str()
    tokenizer = load_tokenizer("selfies")
    ids = tokenizer("[C][=C][Branch1][C][F]")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id and len(ids) == 7
    assert tokenizer.unk_token_id not in ids


def test_collator_drops_and_counts_unusable_lines():
    collate = MoleculeCollator("selfies", max_length=12, representation="selfies")
    batch = collate(["CCO", "C1CC", "CC[Xe]C", "C" * 20])
    assert batch["input_ids"].shape == (1, 5)  # [CLS] [C] [C] [O] [SEP]
    assert collate.dropped == {"too long": 1, "not convertible": 1, "unknown token": 1}


def test_kekule_smiles_keep_every_moses_molecule_without_aromatic_atoms(moses_sample):
    kekule = get_representation("kekule_smiles")
    for smiles in [*moses_sample[:300], "*CC(*)c1ccccc1"]:
        text = kekule.to_model(smiles)
        assert not any(atom.GetIsAromatic() for atom in Chem.MolFromSmiles(text, sanitize=False).GetAtoms())
        assert canonical(kekule.to_smiles(text)) == canonical(smiles)
    assert kekule.to_model("c1cccc1") is None  # five aromatic carbons: no Kekulé form
    assert kekule.to_model("not a molecule") is None
