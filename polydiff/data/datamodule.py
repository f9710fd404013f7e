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
from torch.utils.data import DataLoader, Sampler

from polydiff.data.polymers import Kind, PolymerCorpus, corpus_files
from polydiff.data.representation import RepresentationName, get_representation
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
    """Converts SMILES to the model's representation, tokenizes, pads to the batch's longest.

    Sequences longer than ``max_length`` tokens are dropped, never truncated: a truncated
    SMILES is a different (usually invalid) molecule. Lines that do not convert (SELFIES of an
    unparsable SMILES) or hold tokens the vocabulary lacks are dropped too. ``dropped`` counts
    each reason.
    """

    def __init__(self, tokenizer_name: str, max_length: int, representation: str = "smiles") -> None:
        self.tokenizer_name = tokenizer_name
        self.max_length = max_length
        self.representation = get_representation(representation)
        self.tokenizer = load_tokenizer(tokenizer_name).backend_tokenizer
        self.pad_token_id = self.tokenizer.token_to_id("[PAD]")
        self.unk_token_id = self.tokenizer.token_to_id("[UNK]")
        self.dropped = {"too long": 0, "not convertible": 0, "unknown token": 0}

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())

    def token_ids(self, smiles: list[str], count: bool = True) -> list[list[int]]:
        """Token ids ([CLS] ... [SEP]) of the lines that fit, in order; the others are left out (and counted)."""
        texts = [self.representation.to_model(s) for s in smiles]
        ids = [encoding.ids for encoding in self.tokenizer.encode_batch([t for t in texts if t is not None])]
        known = [x for x in ids if self.unk_token_id not in x]
        kept = [x for x in known if len(x) <= self.max_length]
        if count:
            self.dropped["not convertible"] += texts.count(None)
            self.dropped["unknown token"] += len(ids) - len(known)
            self.dropped["too long"] += len(known) - len(kept)
        return kept

    def __call__(self, smiles: list[str]) -> dict[str, torch.Tensor]:
        kept = self.token_ids(smiles)
        if not kept:
            raise ValueError(
                f"no line of this batch fits (dropped so far: {self.dropped}); check max_length and the data"
            )
        length = max(len(x) for x in kept)
        input_ids = np.full((len(kept), length), self.pad_token_id, dtype=np.int64)
        for row, x in zip(input_ids, kept, strict=True):
            row[: len(x)] = x
        input_ids = torch.from_numpy(input_ids)
        return {"input_ids": input_ids, "attention_mask": (input_ids != self.pad_token_id).long()}


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of lines of similar length, so little compute goes to padding.

    Each epoch shuffles the lines, sorts every window of ``window`` batches by length, cuts it
    into batches and shuffles the batches. The length is that of the SMILES line, a close
    proxy for its token count in either representation that needs no conversion. Every line
    comes once per epoch; under several processes, each takes every ``num_replicas``-th line of
    the shuffled order (its own shard) and all shards give the same number of batches.

    Args:
        lengths: one length per line.
        batch_size: lines per batch.
        window: batches sorted together; 1 is plain shuffling.
        seed: seed of the shuffle; the epoch is added to it (``set_epoch``, called by Lightning).
        num_replicas: processes sharing the data (DDP world size).
        rank: this process's index among them.
    """

    def __init__(
        self, lengths: list[int], batch_size: int, window: int = 50, seed: int = 0, num_replicas: int = 1, rank: int = 0
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.window = window
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-(len(self.lengths) // self.num_replicas) // self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.lengths))
        shard = order[self.rank : len(order) - len(order) % self.num_replicas : self.num_replicas]
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(shard), span):
            chunk = shard[start : start + span]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        for i in rng.permutation(len(batches)):
            yield batches[i]


class SmilesDataModule(LightningDataModule):
    """Molecules (SMILES) or polymer repeat units (PSMILES), one per line.

    With no files given, molecules come from the bundled MOSES sets (Polykovskiy et al., 2020,
    MIT licence: train, a held-out slice of it for validation, and test), and polymers from a
    corpus that SMiPoly builds from monomers (``polydiff.data.polymers``: train, val and test
    splits, built once and cached).

    Args:
        train_file: training lines (.txt/.smi/.csv, optionally .gz); None for the default corpus.
        val_file: validation lines; None takes the polymer corpus's split, or holds out
            ``val_size`` training lines.
        test_file: test lines; None for the default corpus's test set.
        smiles_column: the column to read from CSV files.
        kind: ``molecule``, or ``polymer``: repeat units with exactly two ``*`` (lines with any
            other number are dropped, and counted in the log).
        polymers: how the polymer corpus is built (used with ``kind: polymer`` and no ``train_file``).
        representation: what the model reads and writes: ``smiles`` or ``selfies`` (files and
            samples are SMILES either way).
        tokenizer_name: a local tokenizer path, or None for the bundled tokenizer of the representation.
        max_length: longest tokenized sequence, [CLS] and [SEP] included; longer ones are dropped.
        batch_size: sequences per batch (per device).
        num_workers: DataLoader worker processes.
        val_size: lines held out for validation when ``val_file`` is None.
        seed: seed of the held-out split and of the training order.
        bucket_window: training batches drawn from a window of this many batches of similar
            length (``LengthBucketBatchSampler``); 1 shuffles plainly.
        num_samples: sequences that ``polydiff predict`` generates (its batches are sample indices).
    """

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        smiles_column: str = "SMILES",
        kind: Kind = "molecule",
        polymers: PolymerCorpus = PolymerCorpus(),  # noqa: B008  (a dataclass value, never mutated)
        representation: RepresentationName = "smiles",
        tokenizer_name: str | None = None,
        max_length: int = 128,
        batch_size: int = 64,
        num_workers: int = 0,
        val_size: int = 10_000,
        seed: int = 0,
        bucket_window: int = 50,
        num_samples: int = 1000,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for path in (train_file, val_file, test_file):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"data file not found: {path}")
        self.polymers = polymers  # (hparams keep it as a dict)
        self.tokenizer = load_tokenizer(tokenizer_name or representation)
        self.vocab_size = len(self.tokenizer)
        self.collate = SmilesCollator(tokenizer_name or representation, max_length, representation)
        self.train_smiles: list[str] = []
        self.val_smiles: list[str] = []
        self.test_smiles: list[str] = []

    @property
    def builds_corpus(self) -> bool:
        """Whether the data is the SMiPoly polymer corpus (``kind: polymer`` and no training file)."""
        return self.hparams.kind == "polymer" and self.hparams.train_file is None

    def _read(self, path: str | None, split: str) -> list[str]:
        if path:
            lines = read_smiles(path, self.hparams.smiles_column)
        elif self.builds_corpus:
            lines = read_smiles(corpus_files(self.polymers)[split])
        elif self.hparams.kind == "polymer":
            raise ValueError(f"polymers from data.train_file need a {split} file too: set data.{split}_file")
        else:
            lines = read_smiles(bundled_moses_path(split))
        if self.hparams.kind == "polymer":
            kept = [s for s in lines if s.count("*") == 2]  # "[*:1]" and "*" alike: one "*" per attachment
            if len(kept) < len(lines):
                dropped = len(lines) - len(kept)
                log.warning("data: %d of %d %s lines are not repeat units (two *): dropped", dropped, len(lines), split)
            lines = kept
        return lines

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and not self.val_smiles:
            train = self._read(self.hparams.train_file, "train")
            if self.hparams.val_file or self.builds_corpus:
                self.val_smiles = self._read(self.hparams.val_file, "val")
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
        lengths = [len(ids) - 2 for ids in self.collate.token_ids(sample, count=False)]
        return torch.bincount(torch.tensor(lengths), minlength=self.hparams.max_length + 1).float()[
            : self.hparams.max_length + 1
        ]

    def _loader(self, lines: list[str], batch_sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(
            lines,
            batch_size=1 if batch_sampler else self.hparams.batch_size,
            batch_sampler=batch_sampler,
            collate_fn=self.collate,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer  # under DDP set trainer.use_distributed_sampler false: this sampler shards itself
        batches = LengthBucketBatchSampler(
            [len(s) for s in self.train_smiles],
            self.hparams.batch_size,
            self.hparams.bucket_window,
            self.hparams.seed,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
        )
        return self._loader(self.train_smiles, batches)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_smiles)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_smiles)

    def predict_dataloader(self) -> DataLoader:
        # Generation needs no data: each batch is a range of sample indices, and its size is all that counts.
        return DataLoader(range(self.hparams.num_samples), batch_size=self.hparams.batch_size)
