"""Shared fixtures: small real data files cut from the bundled MOSES sets."""

import itertools
from pathlib import Path

import pytest

from polydiff.data.datamodule import bundled_moses_path, read_smiles

TESTS = Path(__file__).parent
TINY_CONFIG = TESTS / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def moses_sample() -> list[str]:
    """The first 1,200 molecules of the bundled MOSES test set."""
    return read_smiles(bundled_moses_path("test"))[:1200]


@pytest.fixture(scope="session")
def smiles_files(tmp_path_factory, moses_sample) -> dict[str, Path]:
    """train.smi (1,000 lines) and val.smi (200 lines)."""
    folder = tmp_path_factory.mktemp("smiles")
    files = {"train": folder / "train.smi", "val": folder / "val.smi"}
    files["train"].write_text("\n".join(moses_sample[:1000]) + "\n")
    files["val"].write_text("\n".join(itertools.islice(moses_sample, 1000, 1200)) + "\n")
    return files
