"""Token caches: built once in parallel, identical to on-the-fly batching, memory-mapped, rebuilt on change."""

import shutil
import threading

import numpy as np
import pytest
from filelock import FileLock
from rdkit import Chem

from polydiff.data.batching import MoleculeCollator
from polydiff.data.datamodule import MoleculeDataModule
from polydiff.data.screening import screen, summary
from polydiff.data.token_cache import token_cache
from polydiff.utils.cache import cache_dir


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path, moses_sample):
    """300 MOSES molecules with a blank line, an unparsable one, an unknown atom and an over-long chain."""
    path = tmp_path / "corpus.smi"
    path.write_text("\n".join([*moses_sample[:150], "", "C1CC(", "CC[Xe]C", "C" * 80, *moses_sample[150:300]]) + "\n")
    return path


@pytest.mark.parametrize("representation", ["smiles", "selfies"])
def test_cache_holds_what_the_collator_would_batch(corpus, representation, capsys):
    cache = token_cache(corpus, representation, 64, representation, n_jobs=1)
    assert "tokenizing" in capsys.readouterr().err
    collator = MoleculeCollator(representation, 64, representation)
    screened = [line for line in corpus.read_text().splitlines() if screen(line) is None]
    expected = collator.token_ids(screened)
    assert len(cache) == len(expected) == 300
    assert all(np.array_equal(cache[i], ids) for i, ids in enumerate(expected))
    assert isinstance(cache.ids, np.memmap)
    assert cache.lengths.tolist() == [len(ids) for ids in expected]
    assert cache.info["lines"] == 304
    # The blank line, the unparsable one, the atom the vocabulary lacks, the over-long chain.
    assert cache.dropped == {"empty": 1, "invalid SMILES": 1, "unknown token": 1, "too long": 1}


def test_cache_is_reused_and_rebuilt_when_its_inputs_change(corpus, capsys):
    first = token_cache(corpus, "smiles", 64, "smiles", n_jobs=1)
    capsys.readouterr()
    assert token_cache(corpus, "smiles", 64, "smiles", n_jobs=1).folder == first.folder
    assert "tokenizing" not in capsys.readouterr().err
    assert token_cache(corpus, "smiles", 100, "smiles", n_jobs=1).folder != first.folder  # max_length
    corpus.write_text(corpus.read_text() + "CCO\n")  # the file changed
    changed = token_cache(corpus, "smiles", 64, "smiles", n_jobs=1)
    assert changed.folder != first.folder and len(changed) == len(first) + 1


def test_parallel_build_matches_one_process(corpus, tmp_path, monkeypatch):
    one = token_cache(corpus, "selfies", 64, "selfies", n_jobs=1)
    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(tmp_path / "other"))
    two = token_cache(corpus, "selfies", 64, "selfies", n_jobs=2)
    assert np.array_equal(one.offsets, two.offsets) and np.array_equal(one.ids, two.ids)


def test_a_file_with_no_usable_line_is_an_error_naming_it(tmp_path):
    path = tmp_path / "bad.smi"
    path.write_text("\nC1CC(\n\n")
    with pytest.raises(ValueError, match=r"bad\.smi: no usable line"):
        token_cache(path, "selfies", 64, "selfies", n_jobs=1)


def test_datamodule_on_a_cache_holds_out_the_same_validation_lines(corpus):
    kwargs = {"train_file": str(corpus), "val_size": 30, "max_length": 64, "batch_size": 16, "seed": 1}
    cached, lines = MoleculeDataModule(**kwargs, token_cache=True), MoleculeDataModule(**kwargs, token_cache=False)
    cached.prepare_data()
    for dm in (cached, lines):
        dm.setup("fit")
    kept = len(cached.train_smiles.cache)  # 300: the four bad lines are skipped
    assert (len(cached.train_smiles), len(cached.val_smiles)) == (kept - 30, 30)
    assert not set(cached.val_smiles.indices) & set(cached.train_smiles.indices)
    batch = next(iter(cached.val_dataloader()))
    assert batch["input_ids"].shape[0] == 16 and (batch["attention_mask"].sum(1) > 2).all()
    reference = cached.novelty_reference()
    assert all(line in reference for line in lines.train_smiles)
    assert cached.length_histogram().sum() == kept - 30


def test_an_atom_outside_the_common_vocabulary_points_to_the_wide_one(tmp_path):
    path = tmp_path / "platinum.smi"
    path.write_text("CCO\nC[Pt+2]C\nc1ccccc1\n")
    with pytest.raises(ValueError, match=r"line 2: unknown token: .*data.tokenizer_name smiles_full"):
        token_cache(path, "smiles", 64, "smiles", on_bad_line="error", n_jobs=1)
    assert token_cache(path, "smiles", 64, "smiles", n_jobs=1).dropped == {"unknown token": 1}
    assert len(token_cache(path, "smiles_full", 64, "smiles", n_jobs=1)) == 3


def test_a_long_skipped_line_is_shown_by_its_start_and_its_end(tmp_path):
    # An unclosed branch at the end of a long line: a quote of its start alone would hide it.
    line = "C" * 100 + "C("
    path = tmp_path / "long.smi"
    path.write_text(f"{line}\n")
    with pytest.raises(ValueError, match=r"'C{30}' \.\.\. 'C{29}\(' \(102 characters\)"):
        token_cache(path, "smiles", 128, "smiles", n_jobs=1)


def test_a_title_line_and_a_comment_are_skipped_by_name_and_quoted_whole(tmp_path):
    path = tmp_path / "written.smi"
    writer = Chem.SmilesWriter(str(path))  # heads its file "SMILES Name"
    for smiles in ("CCO", "c1ccccc1"):
        writer.write(Chem.MolFromSmiles(smiles))
    writer.close()
    path.write_text(path.read_text() + "# made by hand\n")
    cache = token_cache(path, "smiles", 64, "smiles", n_jobs=1)
    assert len(cache) == 2 and cache.dropped == {"title line": 1, "comment": 1}
    path.write_text("# made by hand\nCCO\n")
    with pytest.raises(ValueError, match=r"line 1: comment: '# made by hand'"):
        token_cache(path, "smiles", 64, "smiles", n_jobs=1, on_bad_line="error")


def test_on_bad_line_error_names_the_first_bad_line_of_a_cache_built_under_skip(tmp_path, moses_sample):
    path = tmp_path / "late.smi"
    path.write_text("\n".join([moses_sample[0], "C" * 80, *moses_sample[1:5], "", moses_sample[5]]) + "\n")
    with pytest.raises(ValueError, match=r"late\.smi, line 2: too long"):
        token_cache(path, "smiles", 64, "smiles", n_jobs=1, on_bad_line="error")
    token_cache(path, "smiles", 64, "smiles", n_jobs=1)  # skip: built, line 7 (empty) counted too
    with pytest.raises(ValueError, match=r"late\.smi, line 2: too long"):
        token_cache(path, "smiles", 64, "smiles", n_jobs=1, on_bad_line="error")


def test_a_build_killed_midway_is_cleared_by_the_next(corpus):
    folder = token_cache(corpus, "smiles", 64, "smiles", n_jobs=1).folder
    shutil.rmtree(folder)
    killed = folder.with_name(f".{folder.name}.{2**31 - 1}.building")  # what kill -9 mid-build leaves
    killed.mkdir()
    (killed / "ids.bin").write_bytes(b"\0" * 10)
    token_cache(corpus, "smiles", 64, "smiles", n_jobs=1)
    assert not killed.exists() and (folder / "cache.json").is_file()


def test_a_second_run_on_the_same_file_waits_for_the_first_to_build(corpus, capsys):
    folder = token_cache(corpus, "smiles", 64, "smiles", n_jobs=1).folder
    shutil.rmtree(folder)
    second = threading.Thread(target=token_cache, args=(corpus, "smiles", 64, "smiles"), kwargs={"n_jobs": 1})
    with FileLock(cache_dir() / "locks" / f"tokens-{folder.name}.lock"):  # as a first run holds it while it builds
        second.start()
        second.join(timeout=2)
        assert second.is_alive() and not folder.exists()
    second.join(timeout=60)
    assert not second.is_alive() and (folder / "cache.json").is_file()
    assert "waiting for another process to finish tokenizing" in capsys.readouterr().err


@pytest.mark.parametrize("token_cache", [True, False])
def test_novelty_is_not_checked_above_the_line_cap_with_or_without_a_cache(corpus, token_cache):
    data = MoleculeDataModule(train_file=str(corpus), val_size=30, max_length=64, token_cache=token_cache, seed=1)
    data.prepare_data()
    data.setup("fit")
    assert data.novelty_reference(max_lines=len(data.train_smiles) - 1) is None
    assert len(data.novelty_reference(max_lines=len(data.train_smiles))) > 0


def test_the_same_bytes_as_a_table_and_as_lines_are_cached_apart(tmp_path):
    # A .csv is read by its column, a .txt line by line: the header is a bad line of the text file.
    table, lines = tmp_path / "train.csv", tmp_path / "train.txt"
    table.write_text("SMILES,score\nCCO,1\nc1ccccc1,2\n")
    lines.write_bytes(table.read_bytes())
    assert len(token_cache(table, "smiles", 64, "smiles", n_jobs=1)) == 2
    with pytest.raises(ValueError, match="no usable line"):
        token_cache(lines, "smiles", 64, "smiles", n_jobs=1)


def test_repeat_units_for_a_molecule_model_and_the_training_file_as_validation_are_warned(tmp_path):
    units = tmp_path / "units.smi"
    units.write_text("".join(f"*{'C' * n}O*\n" for n in range(1, 40)))
    data = MoleculeDataModule(train_file=str(units), val_file=str(units), val_size=5, max_length=64)
    with pytest.warns(UserWarning) as caught:
        data.setup("fit")
    messages = [str(warning.message) for warning in caught]
    assert any("39 of its first 39 lines are polymer repeat units" in message for message in messages)
    assert any("data.val_file is data.train_file" in message for message in messages)


def test_the_skipped_lines_are_counted_in_the_plural_where_there_are_several():
    examples = {"non-numeric value": [5, "211.5 K"]}
    said = summary({"non-numeric value": 250, "comment": 1, "too long": 2}, examples)
    assert said == "1 comment, 2 too long, 250 non-numeric values (e.g. line 5: '211.5 K')"
