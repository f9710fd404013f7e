"""SmilesDataModule: SMILES/PSMILES lines from files, or the bundled MOSES sets."""

from __future__ import annotations

import csv
import gzip
import io
import logging
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from polydiff.data.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

MOSES_SPLITS = ("train", "test", "test_scaffolds")
SUFFIXES = (".txt", ".smi", ".csv")


def bundled_moses_path(split: str) -> Path:
    """Path of a bundled MOSES split (``train``, ``test`` or ``test_scaffolds``)."""
    if split not in MOSES_SPLITS:
        raise ValueError(f"unknown MOSES split {split!r}; choose one of {MOSES_SPLITS}")
    return Path(str(resources.files("polydiff.data") / "bundled" / f"{split}.csv.gz"))


def read_smiles(path: str | Path, smiles_column: str = "SMILES", keep_empty: bool = False) -> list[str]:
    """Reads one molecule per line.

    Args:
        path: a ``.txt``/``.smi`` file (first whitespace-separated field of each line) or a
            ``.csv`` file with a header, optionally gzipped (``.gz``).
        smiles_column: the CSV column holding the SMILES.
        keep_empty: keep empty lines as "" (a file of samples, where they count as invalid).

    Returns:
        The SMILES strings, in file order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffixes[-2] if path.suffix == ".gz" and len(path.suffixes) > 1 else path.suffix
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: expected one of {', '.join(SUFFIXES)} (optionally .gz)")
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    with io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        if suffix == ".csv":
            reader = csv.DictReader(text)
            if smiles_column not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no column {smiles_column!r} (columns: {reader.fieldnames})")
            lines = [row[smiles_column] or "" for row in reader]
        else:
            lines = [line.split(maxsplit=1)[0] if line.strip() else "" for line in text]
    return [s.strip() for s in lines if keep_empty or s.strip()]


class SmilesCollator:
    """Tokenizes a list of SMILES and pads to the longest in the batch (dynamic padding).

    Sequences longer than ``max_length`` tokens are dropped, never truncated: a truncated
    SMILES is a different (usually invalid) molecule.
    """

    def __init__(self, tokenizer_name: str, max_length: int) -> None:
        self.tokenizer_name = tokenizer_name
        self.max_length = max_length
        self.tokenizer = load_tokenizer(tokenizer_name).backend_tokenizer
        self.pad_token_id = self.tokenizer.token_to_id("[PAD]")
        self.num_dropped = 0

    def __call__(self, smiles: list[str]) -> dict[str, torch.Tensor]:
        ids = [encoding.ids for encoding in self.tokenizer.encode_batch(smiles)]
        kept = [x for x in ids if len(x) <= self.max_length]
        self.num_dropped += len(ids) - len(kept)
        length = max(len(x) for x in kept)
        input_ids = np.full((len(kept), length), self.pad_token_id, dtype=np.int64)
        for row, x in zip(input_ids, kept, strict=True):
            row[: len(x)] = x
        input_ids = torch.from_numpy(input_ids)
        return {"input_ids": input_ids, "attention_mask": (input_ids != self.pad_token_id).long()}


class SmilesDataModule(LightningDataModule):
    """Molecules (SMILES) or polymer repeat units (PSMILES), one per line.

    With no files given, trains on the bundled MOSES train set (Polykovskiy et al., 2020,
    MIT licence), validates on a held-out slice of it, and tests on the MOSES test set.

    Args:
        train_file: training lines (.txt/.smi/.csv, optionally .gz); None for bundled MOSES.
        val_file: validation lines; None holds out ``val_size`` training lines.
        test_file: test lines; None for the bundled MOSES test set.
        smiles_column: the column to read from CSV files.
        tokenizer_name: ``smiles`` (bundled) or a local tokenizer path.
        max_length: longest tokenized sequence, [CLS] and [SEP] included; longer ones are dropped.
        batch_size: sequences per batch (per device).
        num_workers: DataLoader worker processes.
        val_size: lines held out for validation when ``val_file`` is None.
        seed: seed of the held-out split.
        num_samples: sequences that ``polydiff predict`` generates (its batches are sample indices).
    """

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        smiles_column: str = "SMILES",
        tokenizer_name: str = "smiles",
        max_length: int = 128,
        batch_size: int = 64,
        num_workers: int = 0,
        val_size: int = 10_000,
        seed: int = 0,
        num_samples: int = 1000,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for path in (train_file, val_file, test_file):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"data file not found: {path}")
        self.tokenizer = load_tokenizer(tokenizer_name)
        self.vocab_size = len(self.tokenizer)
        self.collate = SmilesCollator(tokenizer_name, max_length)
        self.train_smiles: list[str] = []
        self.val_smiles: list[str] = []
        self.test_smiles: list[str] = []

    def _read(self, path: str | None, bundled_split: str) -> list[str]:
        return read_smiles(path or bundled_moses_path(bundled_split), self.hparams.smiles_column if path else "SMILES")

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and not self.val_smiles:
            train = self._read(self.hparams.train_file, "train")
            if self.hparams.val_file:
                self.val_smiles = read_smiles(self.hparams.val_file, self.hparams.smiles_column)
            else:
                if len(train) <= self.hparams.val_size:
                    raise ValueError(f"{len(train)} training lines cannot spare val_size={self.hparams.val_size}")
                order = np.random.default_rng(self.hparams.seed).permutation(len(train))
                held_out = set(order[: self.hparams.val_size].tolist())
                self.val_smiles = [train[i] for i in sorted(held_out)]
                train = [s for i, s in enumerate(train) if i not in held_out]
            self.train_smiles = train
            log.info("data: %d training and %d validation lines", len(self.train_smiles), len(self.val_smiles))
        if stage in ("test", None) and not self.test_smiles:
            self.test_smiles = self._read(self.hparams.test_file, "test")

    def length_histogram(self, num_lines: int = 20_000) -> torch.Tensor:
        """Counts of token lengths ([CLS]/[SEP] excluded) over up to ``num_lines`` training lines.

        Returns:
            A float tensor of size ``max_length + 1``; entry n counts sequences of n tokens.
        """
        rng = np.random.default_rng(self.hparams.seed)
        lines = self.train_smiles
        sample = [lines[i] for i in rng.choice(len(lines), min(num_lines, len(lines)), replace=False)]
        lengths = [len(e.ids) - 2 for e in self.collate.tokenizer.encode_batch(sample)]
        lengths = [n for n in lengths if n + 2 <= self.hparams.max_length]
        return torch.bincount(torch.tensor(lengths), minlength=self.hparams.max_length + 1).float()[
            : self.hparams.max_length + 1
        ]

    def _loader(self, lines: list[str], shuffle: bool) -> DataLoader:
        return DataLoader(
            lines,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            collate_fn=self.collate,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_smiles, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_smiles, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_smiles, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        # Generation needs no data: each batch is a range of sample indices, and its size is all that counts.
        return DataLoader(range(self.hparams.num_samples), batch_size=self.hparams.batch_size)
