"""Conditions read from the user's CSV (a polymer's Tg, a measured property): cached with the lines
they belong to, batched with them, normalised into the checkpoint and guided toward."""

import math
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

import polydiff
from polydiff.cli import main
from polydiff.data.batching import ConditionCollator, PaddingCollator
from polydiff.data.datamodule import MoleculeDataModule
from polydiff.data.token_cache import CachedSequences, WithValues, token_cache
from polydiff.utils.files import iter_rows


def heavy_atoms(smiles: str) -> int:
    return Chem.MolFromSmiles(smiles).GetNumHeavyAtoms()


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory, moses_sample) -> dict[str, Path]:
    """train.csv: 1,000 MOSES molecules with ``score`` = 10 x heavy atoms, blank on every 10th line and
    "n/a" on every 25th, after a line RDKit cannot parse; val.csv: 200 more (no score column)."""
    folder = tmp_path_factory.mktemp("csv")
    rows = ["SMILES,score,name", "C1CC(,55,broken"]
    for i, smiles in enumerate(moses_sample[:1000]):
        score = "" if i % 10 == 0 else "n/a" if i % 25 == 0 else str(10 * heavy_atoms(smiles))
        rows.append(f"{smiles},{score},m{i}")
    files = {"train": folder / "train.csv", "val": folder / "val.csv"}
    files["train"].write_text("\n".join(rows) + "\n")
    files["val"].write_text("SMILES\n" + "\n".join(moses_sample[1000:1200]) + "\n")
    return files


def test_the_cache_keeps_each_kept_lines_values_and_drops_them_with_the_line(csv_files):
    cache = token_cache(csv_files["train"], "smiles", 64, "smiles", value_columns=["score"], n_jobs=1)
    rows = list(iter_rows(csv_files["train"], "SMILES", ["score"]))[1:]  # the unparsable line is dropped
    assert len(cache) == len(rows) == 1000 and cache.dropped == {"invalid SMILES": 1}
    values = cache.values[:, 0]
    assert math.isnan(values[0]) and math.isnan(values[25]) and values[1] == 10 * heavy_atoms(rows[1][0])
    expected = [10 * heavy_atoms(s) if i % 10 and i % 25 else math.nan for i, (s, _) in enumerate(rows)]
    np.testing.assert_array_equal(values, np.array(expected, dtype=np.float32))
    # The same file without the column is another cache: the ids are shared, the values are not.
    plain = token_cache(csv_files["train"], "smiles", 64, "smiles", n_jobs=1)
    assert plain.folder != cache.folder and plain.values.shape == (1000, 0)


def test_a_cell_that_is_no_number_makes_its_line_a_bad_line(tmp_path, moses_sample):
    path = tmp_path / "tg.csv"
    cells = ["350", "1.5 K", "NaN", "inf", "", "n/a", "-12.5"]  # a unit, inf: bad; NaN, blank, n/a: free
    path.write_text("SMILES,Tg\n" + "".join(f"{s},{c}\n" for s, c in zip(moses_sample, cells, strict=False)))
    cache = token_cache(path, "smiles", 64, "smiles", value_columns=["Tg"], n_jobs=1)
    assert len(cache) == 5 and cache.dropped == {"non-numeric value": 2}
    assert cache.info["examples"]["non-numeric value"] == [3, "1.5 K"]  # the file's line 3, and the cell
    np.testing.assert_array_equal(cache.values[:, 0], np.array([350, np.nan, np.nan, np.nan, -12.5], np.float32))
    with pytest.raises(ValueError, match=r"line 3: non-numeric value: '1.5 K'"):
        token_cache(path, "smiles", 64, "smiles", value_columns=["Tg"], n_jobs=1, on_bad_line="error")


def test_batches_carry_the_csv_values_of_their_own_lines(csv_files):
    cache = token_cache(csv_files["train"], "smiles", 64, "smiles", value_columns=["score"], n_jobs=1)
    sequences = CachedSequences(cache, np.arange(len(cache)))
    data = WithValues(sequences, sequences.values(["score"]))
    collate = ConditionCollator(PaddingCollator(0), ["mw", "score"], "smiles", "smiles")
    batch = collate([data[i] for i in range(1, 40)])
    smiles = collate.smiles(batch["input_ids"])
    scores = batch["conditions"][:, 1].numpy()
    known = ~np.isnan(scores)
    assert known.sum() == 39 - 4  # lines 10, 20 and 30 (blank) and 25 (n/a) have none
    assert scores[known].tolist() == [10 * heavy_atoms(s) for s, k in zip(smiles, known, strict=True) if k]
    assert not np.isnan(batch["conditions"][:, 0].numpy()).any()  # mw computed by RDKit for every line


def test_a_condition_that_is_no_property_and_no_csv_column_is_one_clear_error(csv_files, smiles_files):
    with pytest.raises(ValueError, match=r"unknown property 'Tg'.* a column of the training CSV \(score, name\)"):
        MoleculeDataModule(str(csv_files["train"]), str(csv_files["val"]), conditions=["Tg"])
    with pytest.raises(ValueError, match=r"unknown property 'score'.*with a CSV training file"):
        MoleculeDataModule(str(smiles_files["train"]), str(smiles_files["val"]), conditions=["score"])
    # Sampling reads logP as logp; a fit names what it learns as written, and says which was meant.
    with pytest.raises(ValueError, match=r"unknown property 'Score' \(names keep their case: did you mean 'score'\?\)"):
        MoleculeDataModule(str(csv_files["train"]), str(csv_files["val"]), conditions=["Score"])
    with pytest.raises(ValueError, match=r"did you mean 'logp'\?"):
        MoleculeDataModule(str(csv_files["train"]), str(csv_files["val"]), conditions=["logP"])
    with pytest.raises(ValueError, match="through its token cache"):
        MoleculeDataModule(str(csv_files["train"]), str(csv_files["val"]), conditions=["score"], token_cache=False)


def test_a_csv_column_named_as_a_computed_property_is_refused_not_shadowed(tmp_path):
    # A measured logp column would otherwise be replaced by RDKit's logP without a word.
    for name in ("train", "val"):
        (tmp_path / f"{name}.csv").write_text("SMILES,logp,mw\n" + "CCO,-5,1\nc1ccccc1,-4,2\n" * 10)
    files = [str(tmp_path / "train.csv"), str(tmp_path / "val.csv")]
    with pytest.raises(ValueError, match=r"'logp' is a property polydiff computes .* rename the column \(say logp_"):
        MoleculeDataModule(*files, conditions=["qed", "logp"])
    MoleculeDataModule(*files, conditions=["qed"])  # a column no condition names is only read past


def test_a_model_fitted_on_a_csv_column_is_guided_toward_it(csv_files, fit_tiny, tmp_path, capsys):
    data = ["--data.train_file", str(csv_files["train"]), "--data.val_file", str(csv_files["val"])]
    checkpoint = fit_tiny(tmp_path, *data, "--data.conditions", "[logp, score]")
    task = polydiff.load(checkpoint, "cpu")
    assert task.conditions == ["logp", "score"]
    mean, std, low, high = task.condition_statistics[:, 1].tolist()
    # 2,000-line statistics cover the whole file here: the scores (10 x heavy atoms) of its lines with one.
    scores = [
        10 * heavy_atoms(s) for i, (s, _) in enumerate(list(iter_rows(csv_files["train"]))[1:]) if i % 10 and i % 25
    ]
    assert mean == pytest.approx(np.mean(scores), rel=1e-5) and std == pytest.approx(np.std(scores, ddof=1), rel=1e-4)
    assert (low, high) == (min(scores), max(scores))
    output = tmp_path / "guided.smi"
    main(["sample", "--ckpt_path", str(checkpoint), "--output", str(output), "--num_samples=8", "--seed=0",
          "--condition", f"score={mean:.0f}", "--guidance_scale", "1"])  # fmt: skip
    assert len(output.read_text().splitlines()) == 8
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["sample", "--ckpt_path", str(checkpoint), "--output", str(output), "--condition", "score=9999"])
    assert "score=9999 lies outside what this checkpoint was trained on" in capsys.readouterr().err
