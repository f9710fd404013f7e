"""Batches: SMILES lines converted, tokenized and padded to the batch's longest; batches of similar length."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from polydiff.chem.conditions import check_condition_names, condition_columns, data_columns, property_values
from polydiff.data.representation import get_representation
from polydiff.data.tokenizer import load_tokenizer


class MoleculeCollator:
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

    def encode(self, smiles: list[str]) -> list[list[int] | str]:
        """Per line: its token ids ([CLS] ... [SEP]), or why it cannot be used ("not convertible",
        "unknown token", "too long")."""
        texts = [self.representation.to_model(s) for s in smiles]
        encoded = iter(self.tokenizer.encode_batch([t for t in texts if t is not None]))
        results: list[list[int] | str] = []
        for text in texts:
            ids = next(encoded).ids if text is not None else None
            if ids is None:
                results.append("not convertible")
            elif self.unk_token_id in ids:
                results.append("unknown token")
            elif len(ids) > self.max_length:
                results.append("too long")
            else:
                results.append(ids)
        return results

    def token_ids(self, smiles: list[str], count: bool = True) -> list[list[int]]:
        """Token ids ([CLS] ... [SEP]) of the lines that fit, in order; the others are left out (and counted)."""
        kept = []
        for result in self.encode(smiles):
            if isinstance(result, str):
                self.dropped[result] += count
            else:
                kept.append(result)
        return kept

    def __call__(self, smiles: list[str]) -> dict[str, torch.Tensor]:
        kept = self.token_ids(smiles)
        if not kept:
            raise ValueError(
                f"no line of this batch fits in data.max_length {self.max_length} (dropped so far: {self.dropped}): "
                "batches group lines of similar length, so a max_length below many lines' lengths empties "
                "whole batches; data.token_cache true screens every line once, before training"
            )
        return pad_sequences(kept, self.pad_token_id)


def pad_sequences(sequences: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """A batch of token id sequences, padded to the longest: ``input_ids`` and ``attention_mask``."""
    input_ids = np.full((len(sequences), max(len(x) for x in sequences)), pad_token_id, dtype=np.int64)
    for row, x in zip(input_ids, sequences, strict=True):
        row[: len(x)] = x
    input_ids = torch.from_numpy(input_ids)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_token_id).long()}


class PaddingCollator:
    """Pads sequences that are token ids already (from a ``TokenCache``)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, sequences: list[np.ndarray]) -> dict[str, torch.Tensor]:
        return pad_sequences(sequences, self.pad_token_id)


class ConditionCollator:
    """A collator that also gives each batch its ``conditions``, (B, columns) float32: the properties
    ``names`` of every sequence in ``condition_columns`` layout (``polydiff.chem.conditions``),
    computed from the sequence's own tokens (so lines and cached token ids alike get them) in the
    loader's worker processes. Conditions read from the training CSV (``data_columns``) come with
    the items instead: each item is then (sequence, its values in the order of ``data_columns``).

    A property is NaN where it is left out of a sequence's condition: where RDKit cannot compute
    it, and at random for classifier-free guidance. A ``dropout`` fraction of the sequences gets
    no property at all (the unconditional model), the others a random non-empty subset: each
    property with probability 1/2, and one drawn at random where that left none (so any subset
    can be asked for at sampling, and a single property is seen by every other sequence). Only the properties kept are
    computed (RDKit's QED alone takes ~2 ms a molecule), and every property of the sequences that
    keep none: ``properties``, (B, columns), NaN in the other rows, is what the model's property
    head learns to predict from the unconditional model's states (``polydiff.model.property_head``).

    Args:
        collate: the collator whose batches get conditions.
        names: the properties, in the order the model reads them.
        tokenizer_name: the tokenizer that decodes the token ids.
        representation: the text those ids spell, turned back into SMILES.
        dropout: the fraction of sequences with no condition (0: every property of every sequence).
    """

    def __init__(
        self, collate, names: Sequence[str], tokenizer_name: str, representation: str, dropout: float = 0.0
    ) -> None:
        check_condition_names(names)
        self.collate, self.names, self.dropout = collate, list(names), dropout
        self.columns = len(condition_columns(self.names))
        self.data_columns = data_columns(self.names)
        self.computed = torch.tensor([name not in self.data_columns for name in self.names], dtype=torch.bool)
        self.tokenizer = load_tokenizer(tokenizer_name)
        self.representation = get_representation(representation)

    def smiles(self, input_ids: torch.Tensor) -> list[str]:
        """The SMILES that rows of token ids spell."""
        texts = self.tokenizer.batch_decode(input_ids.tolist(), skip_special_tokens=True)
        return [self.representation.to_smiles(text) for text in texts]

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        given = None
        if self.data_columns:
            items, rows = zip(*items, strict=True)
            table = np.stack(rows).astype(np.float64).reshape(len(rows), len(self.data_columns))
            given = dict(zip(self.data_columns, table.T, strict=True))
        batch = self.collate(list(items))
        rows, width = len(batch["input_ids"]), len(self.names)
        kept = torch.ones(rows, width, dtype=torch.bool)
        if self.dropout:  # torch's generator: a loader worker's is seeded from the loader's own
            kept = torch.rand(rows, width) < 0.5
            none = ~kept.any(-1)  # a sequence that keeps no property keeps one drawn at random
            kept[none, torch.randint(width, (int(none.sum()),))] = True
            kept &= torch.rand(rows, 1) >= self.dropout
        unconditioned = ~kept.any(-1)
        # One RDKit pass: the kept properties of the conditioned rows, every property of the others.
        wanted = kept | unconditioned.unsqueeze(-1)
        values = torch.full((rows, self.columns), float("nan"))
        # Only rows that want a property RDKit computes are decoded back to SMILES.
        computed = wanted[:, self.computed].any(-1)
        decoded = iter(self.smiles(batch["input_ids"][computed]))
        smiles = [next(decoded) if needed else "" for needed in computed.tolist()]
        values[:] = torch.from_numpy(property_values(smiles, self.names, wanted.numpy(), given)).float()
        batch["conditions"] = values.masked_fill(unconditioned.unsqueeze(-1), float("nan"))
        batch["properties"] = values.masked_fill(~unconditioned.unsqueeze(-1), float("nan"))
        return batch


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of lines of similar length, so little compute goes to padding.

    Each epoch shuffles the lines, sorts every window of ``window`` batches by length, cuts it
    into batches and shuffles the batches. The length is the line's token count where a token
    cache holds it, else that of the SMILES line, a close proxy that needs no conversion. Every line
    comes once per epoch; under several processes, each takes every ``num_replicas``-th line of
    the shuffled order (its own shard) and all shards give the same number of batches.

    Args:
        lengths: one length per line.
        batch_size: lines per batch.
        window: batches sorted together; 1 is plain shuffling.
        seed: seed of the shuffle; the epoch is added to it (``set_epoch``: ``DiffusionTask`` calls it
            at the start of each epoch, as Lightning does for a loader's sampler but not a batch sampler).
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
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_next(self, batches: int) -> None:
        """Leaves out the first ``batches`` of the next pass: a run resumed mid-epoch then sees the
        rest of that epoch's batches in the order an uninterrupted run would have."""
        self.skip = batches

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
        order, self.skip = rng.permutation(len(batches))[self.skip :], 0
        for i in order:
            yield batches[i]
