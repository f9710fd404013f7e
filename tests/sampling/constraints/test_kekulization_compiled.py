"""The kekulization check's compiled twin (``setup.py``): built by the package's build, the same
answers as its source, and never used once the source has changed."""

import importlib.util
import os
import random
import sys
from pathlib import Path

import pytest

from polydiff.data.tokenizer import load_tokenizer
from polydiff.sampling.constraints import kekulization
from polydiff.sampling.constraints.syntax import ATOM, classify_token

TOKENIZER = load_tokenizer("smiles")


def source_module():
    """kekulization.py run as source, under a name of its own (so it keeps its own classes)."""
    spec = importlib.util.spec_from_file_location("kekulization_source", kekulization.__file__)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def answers(prefix_class, strings: list[list[str]]) -> list[bool]:
    """can_complete after every token of every string (tokens as written)."""
    found = []
    for tokens in strings:
        prefix = prefix_class()
        for token in tokens:
            prefix = prefix.then(token)
            found.append(prefix.can_complete())
    return found


@pytest.mark.skipif(not kekulization.COMPILED, reason="no compiled twin in this install (pure Python)")
def test_the_compiled_twin_answers_as_its_source_does(moses_sample):
    source = source_module()
    assert not source.COMPILED and source.MoleculePrefix is not kekulization.MoleculePrefix
    # Real molecules, and the same with one atom swapped for another at random (the check takes
    # well-formed SMILES: parentheses and ring labels stay): many broken aromatic rings.
    molecules = [TOKENIZER.tokenize(smiles) for smiles in moses_sample[:400]]
    atoms = sorted({token for tokens in molecules for token in tokens if classify_token(token)[0] == ATOM})
    swaps, broken = random.Random(0), []
    for tokens in molecules:
        changed = list(tokens)
        places = [i for i, token in enumerate(tokens) if token in atoms]
        changed[swaps.choice(places)] = swaps.choice(atoms)
        broken.append(changed)
    strings = [[*tokens, "[SEP]"] for tokens in molecules + broken]
    compiled_answers = answers(kekulization.MoleculePrefix, strings)
    assert compiled_answers == answers(source.MoleculePrefix, strings)
    assert 0.02 < compiled_answers.count(False) / len(compiled_answers) < 0.5  # both kinds of answer met


def test_the_twin_is_used_only_while_its_source_is_unchanged(tmp_path, monkeypatch):
    assert (kekulization._compiled_twin() is not None) == kekulization.COMPILED
    edited = tmp_path / "kekulization.py"
    edited.write_text(Path(kekulization.__file__).read_text() + "\n# an edit since the last build\n")
    monkeypatch.setattr(kekulization, "__file__", str(edited))
    assert kekulization._compiled_twin() is None


@pytest.mark.skipif(os.environ.get("POLYDIFF_EXPECT_COMPILED") != "1", reason="POLYDIFF_EXPECT_COMPILED=1 not set")
def test_the_build_compiled_the_check():
    # tox sets it: a build that lost its compiled twin would otherwise pass, only slower.
    assert kekulization.COMPILED
