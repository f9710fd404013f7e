import gzip

import numpy as np
import pytest
import torch

from polydiff.data.batching import MoleculeCollator
from polydiff.data.datamodule import MoleculeDataModule
from polydiff.data.screening import screen_lines
from polydiff.utils.files import read_smiles


def test_read_smiles_formats(tmp_path):
    (tmp_path / "a.smi").write_text("CCO ethanol\n\nc1ccccc1\n")
    (tmp_path / "b.csv").write_text("id,smiles\n1,CCO\n2,c1ccccc1\n")
    with gzip.open(tmp_path / "c.txt.gz", "wt") as f:
        f.write("CCO\r\nc1ccccc1\r\n")
    assert read_smiles(tmp_path / "a.smi") == ["CCO", "c1ccccc1"]
    assert read_smiles(tmp_path / "b.csv", smiles_column="smiles") == ["CCO", "c1ccccc1"]
    assert read_smiles(tmp_path / "c.txt.gz") == ["CCO", "c1ccccc1"]
    (tmp_path / "d.csv").write_text("SMILES\n" + "C" * 200_000 + "\nCCO\n")  # over csv's default cell limit
    assert [len(s) for s in read_smiles(tmp_path / "d.csv")] == [200_000, 3]


def test_read_smiles_errors(tmp_path):
    (tmp_path / "b.csv").write_text("id,smiles\n1,CCO\n")
    with pytest.raises(ValueError, match="no column 'SMILES'"):
        read_smiles(tmp_path / "b.csv")
    (tmp_path / "p.csv").write_text("id,PSMILES\n1,*CC*\n")
    with pytest.raises(ValueError, match=r"no column 'SMILES' .*; its repeat units are read with smiles_column PSM"):
        read_smiles(tmp_path / "p.csv")
    with pytest.raises(FileNotFoundError, match=r"missing\.smi"):
        read_smiles(tmp_path / "missing.smi")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="expected one of"):
        read_smiles(tmp_path / "x.json")


def test_collator_pads_to_the_batch_and_drops_overlong():
    collate = MoleculeCollator("smiles", max_length=8)
    batch = collate(["CCO", "CCCC", "C" * 7])  # 5, 6 and 9 tokens with [CLS]/[SEP]
    assert batch["input_ids"].shape == (2, 6)  # the longest kept, not max_length
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6]
    assert collate.num_dropped == 1


def test_missing_file_fails_at_construction(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.smi"):
        MoleculeDataModule(train_file=str(tmp_path / "nope.smi"))


@pytest.mark.parametrize("token_cache", [False, True], ids=["lines", "token_cache"])
def test_files_and_length_histogram(smiles_files, tmp_path, monkeypatch, token_cache):
    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(tmp_path))
    files = {"train_file": str(smiles_files["train"]), "val_file": str(smiles_files["val"])}
    dm = MoleculeDataModule(**files, batch_size=16, token_cache=token_cache)
    dm.setup("fit")
    assert (len(dm.train_smiles), len(dm.val_smiles)) == (1000, 200)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 16
    assert (batch["input_ids"][:, 0] == dm.tokenizer.cls_token_id).all()
    histogram = dm.length_histogram()
    assert histogram.shape == (129,)
    assert histogram.sum() == 1000
    lines = read_smiles(smiles_files["train"])
    lengths = torch.tensor([len(dm.tokenizer(s)["input_ids"]) - 2 for s in lines])
    assert torch.equal(histogram, torch.bincount(lengths, minlength=129).float())


@pytest.mark.parametrize("token_cache", [False, True], ids=["lines", "token_cache"])
def test_val_size_draws_from_a_larger_validation_file(smiles_files, tmp_path, monkeypatch, token_cache):
    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(tmp_path))
    files = {"train_file": str(smiles_files["train"]), "val_file": str(smiles_files["val"])}
    dm = MoleculeDataModule(**files, val_size=50, seed=1, token_cache=token_cache)
    dm.setup("fit")
    assert len(dm.val_smiles) == 50 and len(dm.train_smiles) == 1000  # training keeps every line
    val = read_smiles(smiles_files["val"])
    positions = list(dm.val_smiles.indices) if token_cache else [val.index(line) for line in dm.val_smiles]
    assert positions == sorted(positions) and positions[-1] > 100  # in file order, from all of it
    other = MoleculeDataModule(**files, val_size=50, seed=2, token_cache=token_cache)
    other.setup("fit")
    drawn = list(other.val_smiles.indices) if token_cache else [val.index(line) for line in other.val_smiles]
    assert len(drawn) == 50 and drawn != positions  # the seed draws them
    whole = MoleculeDataModule(**files, val_size=5000, token_cache=token_cache)
    whole.setup("fit")
    assert len(whole.val_smiles) == 200  # a smaller file is read whole


def test_validation_batches_are_collated_in_the_main_process(smiles_files):
    files = {"train_file": str(smiles_files["train"]), "val_file": str(smiles_files["val"])}
    dm = MoleculeDataModule(**files, batch_size=16, num_workers=1, token_cache=False)
    dm.setup("fit")
    # A persistent validation worker would hold a whole process's memory for the run.
    assert (dm.train_dataloader().num_workers, dm.val_dataloader().num_workers) == (1, 0)
    assert next(iter(dm.val_dataloader()))["input_ids"].shape[0] == 16


def test_bundled_moses_with_held_out_validation():
    dm = MoleculeDataModule(val_size=500, seed=3, token_cache=False)
    dm.setup("fit")
    assert len(dm.val_smiles) == 500
    assert len(dm.train_smiles) == 1_584_663 - 500  # the MOSES train split
    assert not set(dm.val_smiles) & set(dm.train_smiles[:50_000])
    again = MoleculeDataModule(val_size=500, seed=3, token_cache=False)
    again.setup("fit")
    assert again.val_smiles == dm.val_smiles  # the split is reproducible
    dm.setup("test")
    assert len(dm.test_smiles) == 176_074


def test_length_buckets_cover_every_line_once_with_similar_lengths(moses_sample):
    from polydiff.data.batching import LengthBucketBatchSampler

    lengths = [len(s) for s in moses_sample]
    sampler = LengthBucketBatchSampler(lengths, batch_size=32, window=10, seed=0)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert len(batches) == len(sampler)
    spread = np.mean([np.ptp([lengths[i] for i in b]) for b in batches])
    plain = LengthBucketBatchSampler(lengths, batch_size=32, window=1, seed=0)
    assert spread < 0.25 * np.mean([np.ptp([lengths[i] for i in b]) for b in plain])
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new order every epoch
    shards = [list(LengthBucketBatchSampler(lengths, 32, 10, 0, num_replicas=2, rank=r)) for r in (0, 1)]
    seen = [i for shard in shards for b in shard for i in b]
    assert len(seen) == len(set(seen)) == len(lengths) - len(lengths) % 2
    assert len(shards[0]) == len(shards[1])


def test_screening_lines_encodes_only_what_could_be_too_long():
    collator = MoleculeCollator("smiles", max_length=8)
    seen = []

    def encode(lines):
        seen.extend(lines)
        return collator.encode(lines)

    lines = ["CCO", "", "# note", "ClCCCCCl", "CCCCCCCC", "C1CC("]
    kept, dropped, examples = screen_lines(lines, "molecule", encode, parse=False, longer_than=6)
    # ClCCCCCl is 8 characters but 6 tokens: it fits; CCCCCCCC is 8 tokens, 10 with [CLS] and [SEP].
    assert kept == ["CCO", "# note", "ClCCCCCl", "C1CC("]  # unparsed: a clean corpus's lines are trusted
    assert seen == ["ClCCCCCl", "CCCCCCCC"]  # lines of 6 characters or fewer fit unseen
    assert dropped == {"empty": 1, "too long": 1} and examples["too long"] == (4, "CCCCCCCC")
    kept, dropped, _ = screen_lines(lines, "molecule", collator.encode)
    assert kept == ["CCO", "ClCCCCCl"] and dropped == {"empty": 1, "comment": 1, "too long": 1, "invalid SMILES": 1}


@pytest.mark.slow
def test_bundled_lines_below_a_short_max_length_are_left_out_before_batching():
    # A quarter of MOSES is over 40 tokens: batches of similar length would hold nothing that fits.
    dm = MoleculeDataModule(max_length=40, batch_size=256, val_size=500, token_cache=False)
    dm.setup("fit")
    assert 0.6 * 1_584_663 < len(dm.train_smiles) < 0.8 * 1_584_663
    # The batch the length buckets would form of the longest lines: it crashed the run before.
    longest = np.argsort(dm.train_smiles.lengths, kind="stable")[-256:]
    batch = dm.collate([dm.train_smiles[int(i)] for i in longest])["input_ids"]
    assert batch.shape[0] == 256 and batch.shape[1] <= 40 and dm.collate.num_dropped == 0
