"""MoleculeDataModule: SMILES/PSMILES lines from files, or the bundled MOSES sets."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from polydiff.chem.conditions import categorical_columns, check_condition_names, condition_columns, data_columns
from polydiff.chem.molecules import canonical, map_molecules, rdkit_silenced
from polydiff.data.batching import ConditionCollator, LengthBucketBatchSampler, MoleculeCollator, PaddingCollator
from polydiff.data.files import bundled_moses_path, is_bundled, is_repeat_unit_line
from polydiff.data.packed_lines import PackedLines
from polydiff.data.polymers import PolymerCorpus, corpus_files
from polydiff.data.screening import OnBadLine, refuse_bad_line, screen_lines, summary
from polydiff.data.token_cache import CachedSequences, TokenCache, WithValues, token_cache
from polydiff.data.tokenizer import load_tokenizer, unknown_token_hint
from polydiff.types import Kind, RepresentationName
from polydiff.utils.arguments import refuse_mistyped_arguments
from polydiff.utils.cache import file_digest
from polydiff.utils.digest_set import DigestSet
from polydiff.utils.files import csv_columns, existing_file, is_csv, iter_smiles, read_smiles
from polydiff.utils.hparams import as_cli_config
from polydiff.utils.parallel import ignore_ctrl_c

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
NOVELTY_MAX_LINES = 2_000_000  # above this, validation samples are not checked for novelty
PREDICT_NUM_SAMPLES = 1000  # sequences that ``polydiff predict`` writes unless told otherwise
DEFAULT_CONDITION_DROPOUT = 0.2  # one sequence in five trains the unconditional model


def validation_digest(sequences: Sequence) -> dict[str, str]:
    """The SHA-256 of a validation set's sequences (lines or token ids, with their values where a
    condition has them), and which of the two it holds: what a checkpoint compares to tell that a
    resumed fit scores another set."""
    digest = hashlib.sha256()
    for item in sequences:
        for part in item if isinstance(item, tuple) else (item,):
            digest.update(part.encode() if isinstance(part, str) else np.ascontiguousarray(part).tobytes())
            digest.update(b"\0")
    first = sequences[0] if len(sequences) else ""
    lines = isinstance(first[0] if isinstance(first, tuple) else first, str)
    return {"form": "lines" if lines else "token ids", "sha256": digest.hexdigest()}


def _epoch_length(batches: int, limit: int | float) -> int:
    """The batches an epoch trains under ``trainer.limit_train_batches`` (as Lightning counts them)."""
    return min(batches, limit) if isinstance(limit, int) else int(batches * limit)


class MoleculeDataModule(LightningDataModule):
    """Molecules (SMILES) or polymer repeat units (PSMILES), one per line.

    With no files given, molecules come from the bundled MOSES sets (Polykovskiy et al., 2020,
    MIT licence: train, a held-out slice of it for validation, and test), and polymers from a
    corpus that SMiPoly builds from monomers (``polydiff.data.polymers``: train, val and test
    splits, built once and cached).

    Args:
        train_file: training lines (.txt/.smi/.csv, optionally .gz); None for the default corpus.
        val_file: validation lines; None takes the polymer corpus's split, or holds out
            ``val_size`` training lines.
        test_file: test lines; None for the default corpus's test set (``polydiff test`` with a
            ``train_file`` needs one).
        smiles_column: the column to read from CSV files.
        kind: ``molecule``, or ``polymer``: repeat units with exactly two ``*`` (lines with any
            other number are dropped, and counted in the log).
        polymers: how the polymer corpus is built (used with ``kind: polymer`` and no ``train_file``).
        representation: what the model reads and writes: ``smiles``, ``kekule_smiles`` or ``selfies`` (files and
            samples are SMILES either way).
        tokenizer_name: a local tokenizer path, or None for the bundled tokenizer of the representation.
        max_length: longest tokenized sequence, [CLS] and [SEP] included; longer ones are dropped.
        batch_size: sequences per batch (per device).
        num_workers: DataLoader worker processes for the training and test batches. Validation
            batches are collated in the main process: a worker kept for them would hold a process's
            memory (~300 MB) for the whole run to collate a small held-out set now and then; and
            predict's batches are sample indices, which need no worker.
        val_size: validation sequences: held out of the training lines when there is no validation
            file, or drawn (by the seed) from a ``val_file`` or the polymer corpus's split that has
            more, so that a validation costs the same whatever the file.
        seed: seed of the held-out split and of the training order.
        bucket_window: training batches drawn from a window of this many batches of similar
            length (``LengthBucketBatchSampler``); 1 shuffles plainly.
        num_samples: sequences that ``polydiff predict`` generates (its batches are sample indices).
        token_cache: screen, convert and tokenize each file once, in parallel, into an on-disk
            cache that training memory-maps (``polydiff.data.token_cache``): for corpora larger
            than memory and DDP. False keeps the lines in memory, screened the same way at setup,
            and converts them as they are batched; None (the default) caches your files and the
            polymer corpus but reads the bundled MOSES sets, which are clean, as lines.
        on_bad_line: what to do with a line that cannot be trained on (blank, comment, title, not
            UTF-8, invalid SMILES, unknown token, too long, a non-numeric condition value;
            ``polydiff.data.screening``):
            ``skip`` it, counted by reason and summarised at setup, or stop with an ``error``
            naming the file and line.
        global_batch_size: sequences per optimizer step over all devices; the trainer accumulates
            gradients over ``global_batch_size / (batch_size x devices)`` batches (which must be
            whole). None: one batch per step.
        conditions: properties computed with RDKit for every training sequence (``qed``,
            ``logp``, ``mw``, ``tpsa``, ``sa``, and for polymers ``class``, the repeat unit's class;
            ``polydiff.chem.conditions``), or numeric columns of a CSV ``train_file`` (a
            polymer's ``Tg``; read through the token cache, an empty or ``n/a`` cell leaves the
            sequence without it, and a line whose cell is not a number, ``1.5 K``, is a bad line:
            ``on_bad_line``), which the model is trained to be conditioned on, so that sampling can
            be guided toward them (``polydiff sample --condition``). The CLI links them into the
            task. Validation and test batches stay unconditional: ``val/nll`` is the bound
            without conditions.
        condition_dropout: the fraction of training sequences that see no condition, so that one
            model samples unconditionally too and classifier-free guidance has its p(x); the others
            see a random non-empty subset (each property with probability 1/2), so any subset can
            be asked for (``ConditionCollator``). In (0, 1): with none unconditioned, neither p(x)
            nor the property head (trained on those sequences) would learn. None: 0.2, with conditions.
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
        num_samples: int = PREDICT_NUM_SAMPLES,
        token_cache: bool | None = None,
        on_bad_line: OnBadLine = "skip",
        global_batch_size: int | None = None,
        conditions: list[str] | None = None,
        condition_dropout: float | None = None,
    ) -> None:
        # The command line checks these; in Python, a typo (on_bad_line="raise") would pass unseen.
        refuse_mistyped_arguments("data.", MoleculeDataModule.__init__, locals())
        super().__init__()
        self.save_hyperparameters()
        # Built in Python, not by LightningCLI: the same plain config, so the checkpoint loads weights-only.
        if (config := as_cli_config(self.hparams)) is not None:
            self.save_hyperparameters(config)
        counts = {
            "batch_size": batch_size,
            "bucket_window": bucket_window,
            "val_size": val_size,
            "num_samples": num_samples,
        }
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"data.{name} must be at least 1, got {value}")
        if global_batch_size is not None and global_batch_size < 1:
            raise ValueError(
                f"data.global_batch_size must be at least 1 (or null: one batch a step), got {global_batch_size}"
            )
        if max_length < 3:  # [CLS], one token, [SEP]
            raise ValueError(f"data.max_length must be 3 or more ([CLS], a token, [SEP]), got {max_length}")
        if condition_dropout is not None and not conditions:
            raise ValueError("data.condition_dropout drops conditions: it needs data.conditions")
        if condition_dropout is not None and not 0 < condition_dropout < 1:
            raise ValueError(
                f"data.condition_dropout must lie in (0, 1), got {condition_dropout}: the sequences it leaves "
                "unconditioned train the model without conditions (sampling without --condition, guidance) "
                "and the property head"
            )
        self.condition_dropout = DEFAULT_CONDITION_DROPOUT if condition_dropout is None else condition_dropout
        for path in (train_file, val_file, test_file):
            if path is not None:
                existing_file(path, "data file")
        header = [column for column in csv_columns(train_file) if column != smiles_column] if train_file else []
        check_condition_names(conditions or [], kind, header)
        # Conditions read from the training CSV travel with its token cache, one row of values per kept line.
        self.data_columns = data_columns(conditions or [])
        if self.data_columns and token_cache is False:
            raise ValueError(
                f"conditions {', '.join(self.data_columns)} are read from the training CSV through its token "
                "cache: leave data.token_cache at null or true"
            )
        self.polymers = polymers  # (hparams keep it as a dict)
        if polymers != PolymerCorpus() and not self.builds_corpus:
            raise ValueError("data.polymers builds the polymer corpus: only with data.kind polymer and no train_file")
        files = [path for path in (train_file, val_file, test_file) if path is not None]
        if smiles_column != "SMILES" and not any(map(is_csv, files)):
            raise ValueError(f"data.smiles_column {smiles_column!r} names a CSV column: no data file is a CSV")
        self.tokenizer = load_tokenizer(tokenizer_name or representation)
        self.vocab_size = len(self.tokenizer)
        self.collate = MoleculeCollator(tokenizer_name or representation, max_length, representation)
        self.pad = PaddingCollator(self.collate.pad_token_id)
        # Lines (a list of SMILES) or cached token ids (CachedSequences), per split.
        self.data: dict[str, Sequence] = {}
        self._corpus: dict[str, Path] | None = None  # the polymer corpus's files, once built
        self._files: dict[str, dict[str, str]] = {}  # the user's files the fit's lines came from (``_files_read``)
        self._validation: dict[str, str] = {}  # what the validation set holds (``validation_digest``)
        # Set by a resumed fit's checkpoint whose validation set was another: its val/nll scored other sequences.
        self.validation_changed = False

    @property
    def builds_corpus(self) -> bool:
        """Whether the data is the SMiPoly polymer corpus (``kind: polymer`` and no training file)."""
        return self.hparams.kind == "polymer" and self.hparams.train_file is None

    @property
    def train_smiles(self) -> Sequence:
        return self.data.get("train", [])

    @property
    def val_smiles(self) -> Sequence:
        return self.data.get("val", [])

    @property
    def test_smiles(self) -> Sequence:
        return self.data.get("test", [])

    def _source(self, split: str) -> tuple[Path, str] | None:
        """The file (and CSV column) a split is read from; None for a validation set held out of
        training, and for the test set of a ``train_file`` given without a ``test_file``."""
        given = {"train": self.hparams.train_file, "val": self.hparams.val_file, "test": self.hparams.test_file}[split]
        if given:
            return Path(given), self.hparams.smiles_column
        if self.builds_corpus:
            if self._corpus is None:
                self._corpus = corpus_files(self.polymers)
            return self._corpus[split], "SMILES"
        if split == "val" or self.hparams.train_file is not None:  # MOSES's test set is not the user's corpus's
            return None
        return bundled_moses_path(split), "SMILES"

    def _splits(self, stage: str | None) -> tuple[str, ...]:
        # The splits a Trainer stage reads (validation may be held out of training; predict reads none).
        return {"fit": ("train", "val"), "validate": ("train", "val"), "test": ("test",), "predict": ()}.get(
            stage, SPLITS
        )

    def _cached(self, split: str) -> bool:
        """Whether a split is read through a token cache (``token_cache``; None: all but bundled MOSES)."""
        source = self._source(split)
        if source is None:
            return False
        if self.hparams.token_cache is None:
            return not is_bundled(source[0])
        return self.hparams.token_cache

    def _cache(self, split: str) -> TokenCache:
        path, column = self._source(split)
        hp = self.hparams
        name = hp.tokenizer_name or hp.representation
        values = self.data_columns if split == "train" else ()  # only training batches are conditioned
        return token_cache(
            path, name, hp.max_length, hp.representation, column, hp.kind, hp.on_bad_line, value_columns=values
        )

    def _with_values(self, data: Sequence) -> Sequence:
        """The training sequences, each paired with its CSV conditions where there are any (``ConditionCollator``)."""
        return WithValues(data, data.values(self.data_columns)) if self.data_columns else data

    def prepare_data(self) -> None:
        # Once per node, before every rank's setup: build the polymer corpus and the token caches.
        stage = self.trainer.state.fn if self.trainer is not None else None
        self._check_stage(stage)  # before minutes of building
        if self.builds_corpus:
            self._source("train")
        for split in self._splits(stage):
            if self._cached(split):
                self._cache(split)

    def _lines(self, split: str) -> list[str]:
        """A split kept as lines (no token cache), screened as a cache screens it (``on_bad_line``),
        and summarised. The bundled MOSES sets are clean: only their lengths are checked, and only
        for SMILES, whose lines of at most max_length - 2 characters fit without a look (another
        representation's are left to the batches: converting 1.6M lines takes minutes)."""
        path, column = self._source(split)
        hp = self.hparams
        bundled = is_bundled(path)
        lines = read_smiles(path, column, keep_empty=True)
        encode = None if bundled and hp.representation != "smiles" else self.collate.encode
        with rdkit_silenced():  # one RDKit message per bad line would bury the summary
            kept, dropped, examples = screen_lines(
                lines, hp.kind, encode, parse=not bundled, longer_than=hp.max_length - 2 if bundled else 0
            )
        header = 1 if is_csv(path) else 0  # line numbers count a CSV's header
        examples = {reason: (index + 1 + header, text) for reason, (index, text) in examples.items()}
        if examples and hp.on_bad_line == "error":
            reason, (line_number, text) = min(examples.items(), key=lambda item: item[1][0])
            refuse_bad_line(path, reason, line_number, text, hp.tokenizer_name or hp.representation)
        if not kept:
            raise ValueError(f"{path}: no usable line ({summary(dropped, examples) or 'empty file'})")
        if dropped or not bundled:
            self._report(split, path, len(kept), len(lines), dropped, examples)
        return kept

    def _report(self, split: str, path, kept: int, lines: int, dropped: dict, examples: dict) -> None:
        """Says, once per run, how many lines of a split were kept and why the others were skipped."""
        message = f"data: {split} {path}: {kept:,} of {lines:,} lines kept"
        if dropped:
            message += f"; skipped {summary(dropped, examples)}"
        hint = unknown_token_hint(self.hparams.tokenizer_name or self.hparams.representation)
        if dropped.get("unknown token") and hint:
            message += f" ({hint})"
        rank_zero_info(message)  # on the console and in the log

    def _load(self, split: str) -> Sequence:
        if not self._cached(split):
            lines = self._lines(split)
            # The training lines, read by every loader worker all run long, packed into one buffer.
            return PackedLines(lines) if split == "train" else lines
        cache = self._cache(split)
        info = cache.info
        # The file given: a cache is keyed by content, and may have been built from a copy elsewhere.
        self._report(split, self._source(split)[0], info["kept"], info["lines"], cache.dropped, info["examples"])
        return CachedSequences(cache, np.arange(len(cache)))

    def _drawn(self, total: int) -> np.ndarray:
        """A boolean mask over ``total`` sequences: ``val_size`` of them, drawn by the seed."""
        order = np.random.default_rng(self.hparams.seed).permutation(total)
        drawn = np.zeros(total, dtype=bool)
        drawn[order[: self.hparams.val_size]] = True
        return drawn

    def _hold_out(self, train: Sequence) -> tuple[Sequence, Sequence]:
        """(train, validation): ``val_size`` lines drawn from the training set by the seed."""
        if len(train) <= self.hparams.val_size:
            raise ValueError(f"{len(train)} training lines cannot spare val_size={self.hparams.val_size}")
        held_out = self._drawn(len(train))
        if isinstance(train, CachedSequences):
            return train.subset(~held_out), train.subset(held_out)
        return train.subset(~held_out), list(train.subset(held_out))

    def _at_most_val_size(self, val: Sequence) -> Sequence:
        """A validation file's sequences, or ``val_size`` of them (in file order) where it has more."""
        if len(val) <= self.hparams.val_size:
            return val
        rank_zero_info(
            f"data: validation on {self.hparams.val_size:,} of the {len(val):,} validation sequences (data.val_size)"
        )
        drawn = self._drawn(len(val))
        if isinstance(val, CachedSequences):
            return val.subset(drawn)
        return [line for line, keep in zip(val, drawn, strict=True) if keep]

    def _files_read(self) -> dict[str, dict[str, str]]:
        """The user's files the training and validation lines come from (not the bundled sets, nor a
        polymer corpus, which its cache's key keeps): split -> resolved path and SHA-256."""
        given = {"train": self.hparams.train_file, "val": self.hparams.val_file}
        return {
            split: {"path": str(Path(path).resolve()), "sha256": file_digest(path)}
            for split, path in given.items()
            if path and not is_bundled(path) and Path(path).is_file()
        }

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the data: the files its lines were read from, as ``setup`` read
        them, and the digest of its validation set."""
        return {"files": self._files, "validation": self._validation}

    def load_state_dict(self, state_dict: dict) -> None:
        """Says where a file of the fit's has changed since (Lightning restores this after
        ``setup``): validation would hold out and score other lines than the fit's, and a resumed fit
        would train on other batches than the run it continues, without a word."""
        stage = getattr(getattr(getattr(self.trainer, "state", None), "fn", None), "value", None)
        if stage not in ("fit", "validate"):
            return
        for split, fitted in (state_dict.get("files") or {}).items():
            now = self._files.get(split)
            if now is not None and now["path"] == fitted["path"] and now["sha256"] != fitted["sha256"]:
                option = "data.train_file" if split == "train" else "data.val_file"
                if stage == "fit":
                    meaning = "the resumed fit reads other lines than the run it continues"
                elif split == "train" and self.hparams.val_file:  # nothing is held out of it
                    meaning = "validation scores data.val_file's lines as before; "
                    meaning += "only its samples' novelty counts other lines"
                else:
                    meaning = "validation holds out and scores other lines than the fit's"
                rank_zero_warn(f"{option} {fitted['path']} has changed since the checkpoint was saved: {meaning}")
        saved, now = state_dict.get("validation") or {}, self._validation
        # Lines and token ids of the same set digest apart: only a set read the same way compares.
        if stage == "fit" and saved and now and saved["form"] == now["form"] and saved["sha256"] != now["sha256"]:
            self.validation_changed = True
            rank_zero_warn(
                "the validation set is not the resumed run's (another training or validation file, or "
                "data.val_size): its val/nll scores other sequences, so the run's best checkpoint starts afresh"
            )

    def _check_stage(self, stage: str | None) -> None:
        """Refuses the options that the Trainer stage (a ``TrainerFn``, or None) would not use."""
        if stage not in ("predict", None) and self.hparams.num_samples != PREDICT_NUM_SAMPLES:
            command = getattr(stage, "value", stage)
            raise ValueError(f"data.num_samples: the sequences polydiff predict writes; polydiff {command} writes none")

    def setup(self, stage: str | None = None) -> None:
        self._check_stage(stage)
        if stage == "fit" and self.hparams.global_batch_size and self.trainer is not None:
            accumulation = self._accumulation(self.trainer.world_size)
            if self.trainer.accumulate_grad_batches not in (1, accumulation):  # one of the two decides
                raise ValueError("give data.global_batch_size or trainer.accumulate_grad_batches, not both")
            self.trainer.accumulate_grad_batches = accumulation
        if stage in ("fit", "validate", None) and "val" not in self.data:
            train = self._load("train")
            self._warn_of_unlikely_files()
            if self._source("val") is None:
                self.data["train"], self.data["val"] = self._hold_out(train)
            else:
                self.data["train"], self.data["val"] = train, self._at_most_val_size(self._load("val"))
            log.info("data: %d training and %d validation sequences", len(self.train_smiles), len(self.val_smiles))
            self._files = self._files_read()  # as just read (the digest is memoized: a token cache took it)
            self._validation = validation_digest(self.val_smiles)
        if stage in ("test", None) and "test" not in self.data:
            if self._source("test") is not None:
                self.data["test"] = self._load("test")
            elif stage == "test":
                raise ValueError("data.train_file needs a test file of the same corpus: set data.test_file")

    def _warn_of_unlikely_files(self) -> None:
        """Files that train and score without an error, and not as meant: polymer repeat units for
        a molecule model (judged by the first 1,000 lines), or the training file as validation file."""
        train, val = self.hparams.train_file, self.hparams.val_file
        if train and val and Path(train).resolve() == Path(val).resolve():
            rank_zero_warn("data.val_file is data.train_file: validation scores lines the model trains on")
        if self.hparams.kind != "molecule" or not train or is_bundled(train):
            return
        first = list(islice(iter_smiles(Path(train), self.hparams.smiles_column), 1_000))
        units = sum(is_repeat_unit_line(line) for line in first)
        if units > len(first) / 2:
            rank_zero_warn(
                f"{train}: {units:,} of its first {len(first):,} lines are polymer repeat units (two *): "
                "a polymer model takes --data.kind polymer (recipes/data/polymers.yaml)"
            )

    def _accumulation(self, world_size: int) -> int:
        per_step = self.hparams.batch_size * world_size
        if self.hparams.global_batch_size % per_step:
            raise ValueError(
                f"data.global_batch_size {self.hparams.global_batch_size} is not a multiple of "
                f"data.batch_size x devices = {self.hparams.batch_size} x {world_size}"
            )
        return self.hparams.global_batch_size // per_step

    def novelty_reference(self, max_lines: int = NOVELTY_MAX_LINES) -> DigestSet | None:
        """The training lines' canonical SMILES (a repeat unit's canonical PSMILES), as digests
        (``DigestSet``), for the novelty of validation samples, which are compared canonical; None
        above ``max_lines``. A cached corpus's held-out validation lines are in it too.

        The bundled MOSES sets and the built polymer corpus are canonical, and are taken as
        written; the lines of any other file are canonicalized here, once a run, in this process
        (a pool forked from a training process, with its threads, can hang)."""
        lines: Sequence[str] = self.train_smiles
        if len(lines) > max_lines:
            return None
        if isinstance(lines, CachedSequences):
            path, column = self._source("train")
            lines = [line for line in iter_smiles(path, column) if line]
        train_file = self.hparams.train_file
        if train_file is None or is_bundled(train_file):
            return DigestSet(lines)
        polymer = self.hparams.kind == "polymer"
        lines = list(lines)
        if len(lines) >= 100_000:  # RDKit writes about 3,000 a second: say what the wait is
            rank_zero_info(f"data: canonical SMILES of {len(lines):,} training lines, once, for the samples' novelty")
        canonicals = map_molecules(partial(canonical, polymer=polymer), lines)
        return DigestSet(smiles for smiles in canonicals if smiles is not None)

    def length_histogram(self, num_lines: int = 20_000) -> torch.Tensor:
        """Counts of token lengths ([CLS]/[SEP] excluded) over the training set (up to ``num_lines`` lines
        when they must be tokenized first).

        Returns:
            A float tensor of size ``max_length + 1``; entry n counts sequences of n tokens.
        """
        train = self.train_smiles
        if isinstance(train, CachedSequences):
            lengths = torch.from_numpy(train.lengths - 2)
        else:
            rng = np.random.default_rng(self.hparams.seed)
            sample = [train[i] for i in rng.choice(len(train), min(num_lines, len(train)), replace=False)]
            lengths = torch.tensor([len(ids) - 2 for ids in self.collate.token_ids(sample, count=False)])
        size = self.hparams.max_length + 1
        return torch.bincount(lengths, minlength=size).float()[:size]

    def token_histogram(self, vocab_size: int, num_lines: int = 20_000) -> torch.Tensor:
        """Counts of each token id over up to ``num_lines`` training lines (drawn with the data seed).

        Returns:
            A float tensor of size ``vocab_size``.
        """
        train = self.train_smiles
        rows = np.random.default_rng(self.hparams.seed).choice(len(train), min(num_lines, len(train)), replace=False)
        if isinstance(train, CachedSequences):
            ids = [torch.from_numpy(np.asarray(train[i], dtype=np.int64)) for i in rows]
        else:
            ids = [torch.tensor(s) for s in self.collate.token_ids([train[i] for i in rows], count=False)]
        flat = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)
        return torch.bincount(flat, minlength=vocab_size).float()[:vocab_size]

    def condition_statistics(self, num_lines: int = 2_000) -> torch.Tensor:
        """Statistics of each column of ``conditions`` (``condition_columns``) over up to
        ``num_lines`` training sequences (drawn with the data seed), (4, columns).

        A numeric property's column holds its mean, standard deviation, minimum and maximum: the
        model reads it as (value - mean) / std, and a guidance target far outside [minimum,
        maximum] is refused. A category's column (``class=polyamide``) holds its share of the
        sample, 1, 0 and the number of training sequences of that category it stands for (the
        share times the training set's size): the model reads the one-hot value as it is, and a
        category with too few training sequences is refused.
        """
        names = self.hparams.conditions or []
        train = self.train_smiles
        rows = np.random.default_rng(self.hparams.seed).choice(len(train), min(num_lines, len(train)), replace=False)
        collate = ConditionCollator(
            self._collate_for(train),
            names,
            self.hparams.tokenizer_name or self.hparams.representation,
            self.hparams.representation,
        )
        sequences = self._with_values(train)
        values = collate([sequences[i] for i in rows])["conditions"].double()
        columns = condition_columns(names)
        statistics = []
        for column, categorical, name in zip(values.T, categorical_columns(names), columns, strict=True):
            known = column[~column.isnan()]
            if len(known) < 2:
                source = "the training CSV has" if name in self.data_columns else "RDKit computed"
                raise ValueError(
                    f"{source} {len(known)} value(s) of {name.partition('=')[0]!r} among the {len(rows):,} "
                    "training lines drawn for its statistics (at least 2 needed)"
                )
            if categorical:  # a unit of no class is none of this one: its share is of every line drawn
                share = known.sum() / len(column)
                statistics.append([share, 1.0, 0.0, share * len(train)])
            else:
                statistics.append([known.mean(), known.std().clamp(min=1e-6), known.min(), known.max()])
        return torch.tensor(statistics, dtype=torch.float64).T.reshape(4, len(columns)).float()

    def _collate_for(self, data: Sequence):
        if isinstance(data, WithValues):
            data = data.sequences
        return self.pad if isinstance(data, CachedSequences) else self.collate

    def _loader(
        self, data: Sequence, batch_sampler: Sampler | None = None, conditions: bool = False, workers: int | None = None
    ) -> DataLoader:
        trainer = self.trainer
        workers = self.hparams.num_workers if workers is None else workers
        collate = self._collate_for(data)
        if conditions and self.hparams.conditions:
            name = self.hparams.tokenizer_name or self.hparams.representation
            collate = ConditionCollator(
                collate, self.hparams.conditions, name, self.hparams.representation, self.condition_dropout
            )
        sampler = None
        if batch_sampler is None and trainer is not None and trainer.world_size > 1:
            # Lightning's own sampler injection is off (use_distributed_sampler: false, for the
            # training batches): shard evaluation here, each rank its slice, in order.
            sampler = DistributedSampler(data, trainer.world_size, trainer.global_rank, shuffle=False)
        return DataLoader(
            data,
            batch_size=1 if batch_sampler else self.hparams.batch_size,
            batch_sampler=batch_sampler,
            sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=ignore_ctrl_c if workers else None,
            # Worker seeds from a generator of the loader's own, not torch's global one: starting
            # a loader then draws nothing from the stream that masks and drops out, so a resumed
            # run (which starts its loaders at other moments) draws the same noise.
            generator=torch.Generator().manual_seed(self.hparams.seed),
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        train = self.train_smiles
        # Exact token counts from a cache; the SMILES length, a close proxy, for lines.
        lengths = train.lengths if isinstance(train, CachedSequences | PackedLines) else [len(s) for s in train]
        batches = LengthBucketBatchSampler(
            lengths,
            self.hparams.batch_size,
            self.hparams.bucket_window,
            self.hparams.seed,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
        )
        if trainer is not None:  # resuming: the rest of the epoch it stopped in, in that epoch's order
            # "processed", not "completed": a checkpoint written in on_train_batch_end (every N steps
            # or minutes) has stepped on its last batch before Lightning counts it completed. Only
            # when resuming: a loader built again at an epoch's start (reload_dataloaders_every_n_epochs)
            # sees the epoch before's count.
            loop = trainer.fit_loop
            epoch = trainer.current_epoch
            done = loop.epoch_loop.batch_progress.current.processed if loop.restarting else 0
            if done >= _epoch_length(len(batches), trainer.limit_train_batches):  # an epoch's end: the next, whole
                epoch, done = epoch + 1, 0
            # Set here as well as in DiffusionTask.on_train_epoch_start, which Lightning does not call
            # for the epoch a run resumes in (it dealt that epoch from epoch 0's order).
            batches.set_epoch(epoch)
            batches.skip_next(done)
        return self._loader(self._with_values(train), batches, conditions=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_smiles, workers=0)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_smiles)

    def predict_dataloader(self) -> DataLoader:
        # Generation needs no data: each batch is a range of sample indices, and its size is all
        # that counts. Under several processes each takes every world_size-th index: together
        # exactly num_samples, none twice.
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return DataLoader(range(rank, self.hparams.num_samples, world), batch_size=self.hparams.batch_size)
