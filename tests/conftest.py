"""Shared fixtures: small real data files cut from the bundled MOSES sets."""

import itertools
import os
import signal
from pathlib import Path

import pytest

from polydiff.data.files import bundled_moses_path
from polydiff.utils.cache import CACHE_ENV
from polydiff.utils.files import read_smiles

TESTS = Path(__file__).parent
TINY_CONFIG = TESTS / "configs" / "tiny.yaml"


@pytest.fixture(scope="session", autouse=True)
def temporary_cache(tmp_path_factory):
    """Token caches, polymer corpora and reference statistics that tests build go to a temporary
    folder, not ~/.cache/polydiff (set before any fixture, module-scoped ones included, runs)."""
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("polydiff-cache"))
    yield
    if previous is None:
        del os.environ[CACHE_ENV]
    else:
        os.environ[CACHE_ENV] = previous


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_as_a_terminal_sends_it():
    """Ctrl-C as an interactive shell leaves it: a background job (CI's runner, say) starts with
    SIGINT ignored, and so does every process it starts, so the tests of Ctrl-C would wait for a
    stop that never comes. Handled here, the processes the tests start get it back (exec resets
    caught signals to their default)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


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


@pytest.fixture(scope="session")
def fit_tiny(smiles_files):
    """``fit_tiny(root, *args)``: ``polydiff fit`` of base + tiny.yaml on the small files, through ``main``;
    returns the path of its last.ckpt."""
    from polydiff.cli import main

    base = str(TESTS.parent / "recipes" / "base.yaml")

    def fit(root: Path, *args: str) -> Path:
        data = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
        main(["fit", "-c", base, "-c", str(TINY_CONFIG), *data, "--trainer.default_root_dir", str(root), *args])
        return root / "lightning_logs/version_0/checkpoints/last.ckpt"

    return fit
