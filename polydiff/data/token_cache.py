"""Token caches: a corpus converted and tokenized once, kept on disk as memory-mapped numpy arrays.

A corpus of 10^7 SMILES as Python strings takes gigabytes of RAM, and converting it to
SELFIES costs about half a millisecond a line, every epoch. A token cache does both once:
worker processes convert and tokenize the file in chunks, and the token ids of every kept
line are written end to end into ``ids.bin`` (one byte a token for vocabularies under 256,
two otherwise), with ``offsets.npy`` marking where each line starts. Training then reads
sequences straight from the memory map: the operating system pages in what is used, every
DDP rank on a node shares the same pages, and RAM stays flat whatever the corpus size.

The cache lives in ``$POLYDIFF_CACHE_DIR/tokens/<key>/``, keyed by the file's SHA-256, the
tokenizer (its serialized JSON), the representation, ``max_length`` and the column read, so
a changed file or tokenizer is tokenized anew. It is written into a private folder and renamed
into place, so a killed build leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sys
import time
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import torch

from polydiff.cache import cache_dir, file_digest

FORMAT_VERSION = 1
CHUNK_LINES = 10_000  # lines per worker task (one progress step)


class TokenCache(torch.utils.data.Dataset):
    """The token ids ([CLS] ... [SEP]) of a corpus's kept lines, read from a memory map.

    Attributes:
        folder: where the cache lives.
        info: what was built: the source file, line counts, lines dropped by reason, seconds.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.info = json.loads((folder / "cache.json").read_text())
        self.offsets = np.load(folder / "offsets.npy", mmap_mode="r")
        size = int(self.offsets[-1])
        # np.memmap cannot map an empty file: a corpus with no kept line has no ids to map.
        self.ids = np.memmap(folder / "ids.bin", dtype=self.info["dtype"], mode="r") if size else np.zeros(0)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.ids[self.offsets[index] : self.offsets[index + 1]], dtype=np.int64)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per sequence, [CLS] and [SEP] included."""
        return np.diff(self.offsets)

    @property
    def dropped(self) -> dict[str, int]:
        return self.info["dropped"]


class CachedSequences(torch.utils.data.Dataset):
    """Some of a cache's sequences (a split of it), by index."""

    def __init__(self, cache: TokenCache, indices: np.ndarray) -> None:
        self.cache = cache
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.cache[int(self.indices[index])]

    @property
    def lengths(self) -> np.ndarray:
        return self.cache.lengths[self.indices]

    def subset(self, keep: np.ndarray) -> CachedSequences:
        """The sequences where the boolean mask ``keep`` is true."""
        return CachedSequences(self.cache, self.indices[keep])


@cache
def _encoder(tokenizer_name: str, max_length: int, representation: str):
    from polydiff.data.batching import SmilesCollator

    return SmilesCollator(tokenizer_name, max_length, representation)


def encode_chunk(task: tuple[list[str], str, int, str, str]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Token ids (end to end), lengths and drop counts of one chunk of lines (runs in a worker)."""
    from polydiff.data.files import is_repeat_unit_line

    lines, tokenizer_name, max_length, representation, kind = task
    encoder = _encoder(tokenizer_name, max_length, representation)
    before = dict(encoder.dropped)
    usable = [s for s in lines if s and (kind == "molecule" or is_repeat_unit_line(s))]
    ids = encoder.token_ids(usable)
    dropped = {reason: encoder.dropped[reason] - before[reason] for reason in before}
    dropped["empty"] = sum(not s for s in lines)
    dropped["not a repeat unit (two *)"] = len(lines) - len(usable) - dropped["empty"]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter((i for x in ids for i in x), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths, dropped


def cache_key(path: Path, smiles_column: str, encoding: tuple[str, int, str, str]) -> str:
    """The folder name of a file's token cache: a digest of everything the ids depend on."""
    from polydiff.data.tokenizer import load_tokenizer

    tokenizer_name, max_length, representation, kind = encoding
    tokenizer_json = load_tokenizer(tokenizer_name).backend_tokenizer.to_str()
    key = {
        "file": file_digest(path),
        "column": smiles_column,
        "tokenizer": hashlib.sha256(tokenizer_json.encode()).hexdigest(),
        "representation": representation,
        "max_length": max_length,
        "kind": kind,
        "format": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def token_cache(
    path: str | Path,
    tokenizer_name: str,
    max_length: int,
    representation: str,
    smiles_column: str = "SMILES",
    kind: str = "molecule",
    n_jobs: int | None = None,
    progress: bool | None = None,
) -> TokenCache:
    """The token cache of a file of SMILES, built on first use (in ``n_jobs`` processes).

    Args:
        path: one SMILES per line (.txt/.smi, or .csv with ``smiles_column``; .gz allowed).
        tokenizer_name: the tokenizer (``smiles``, ``selfies`` or a local path).
        max_length: longest kept sequence, [CLS] and [SEP] included; longer lines are dropped.
        representation: ``smiles`` or ``selfies``.
        smiles_column: the CSV column to read.
        kind: ``molecule``, or ``polymer`` to drop lines without exactly two ``*``.
        n_jobs: worker processes; None for every core.
        progress: draw a progress bar; None draws one when stderr is a terminal.

    Returns:
        The cache, memory-mapped.
    """
    path = Path(path)
    encoding = (tokenizer_name, max_length, representation, kind)
    folder = cache_dir() / "tokens" / cache_key(path, smiles_column, encoding)
    if not (folder / "cache.json").is_file():
        _build(path, folder, encoding, smiles_column, n_jobs, progress)
    cached = TokenCache(folder)
    if not len(cached):
        raise ValueError(f"{path}: no usable line (dropped: {cached.dropped})")
    return cached


def _chunks(path: Path, smiles_column: str, size: int):
    from polydiff.data.files import iter_smiles

    chunk = []
    for line in iter_smiles(path, smiles_column):
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _build(path: Path, folder: Path, encoding: tuple, smiles_column: str, n_jobs: int | None, progress) -> None:
    import multiprocessing

    from polydiff.chem.parallel import default_jobs, progress_bars
    from polydiff.data.tokenizer import load_tokenizer

    started = time.perf_counter()
    vocab_size = len(load_tokenizer(encoding[0]))
    dtype = np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.int32
    building = folder.with_name(f".{folder.name}.{os.getpid()}.building")
    building.mkdir(parents=True, exist_ok=True)
    print(f"polydiff: tokenizing {path} once into {folder}", file=sys.stderr)
    lengths, dropped, lines = [], Counter(), 0
    tasks = ((chunk, *encoding) for chunk in _chunks(path, smiles_column, CHUNK_LINES))
    n_jobs = n_jobs or default_jobs()
    with (
        progress_bars(sys.stderr.isatty() if progress is None else progress) as bars,
        open(building / "ids.bin", "wb") as ids,
        multiprocessing.get_context().Pool(n_jobs) if n_jobs > 1 else _InProcess() as pool,
    ):
        bar = bars.add_task("tokenizing", total=None)
        # A few chunks per worker at a time: Pool.imap would read the whole file into its queue.
        while window := list(itertools.islice(tasks, 4 * n_jobs)):
            for flat, chunk_lengths, chunk_dropped in pool.imap(encode_chunk, window):
                flat.astype(dtype).tofile(ids)
                lengths.append(chunk_lengths)
                dropped.update(chunk_dropped)
                lines += len(chunk_lengths) + sum(chunk_dropped.values())
                bars.update(bar, completed=lines)
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    np.save(building / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    info = {
        "source": str(path),
        "lines": lines,
        "kept": len(lengths),
        "dropped": {reason: dropped[reason] for reason in sorted(dropped) if dropped[reason]},
        "dtype": np.dtype(dtype).name,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (building / "cache.json").write_text(json.dumps(info, indent=2) + "\n")
    try:
        os.replace(building, folder)
    except OSError:  # another process (a DDP rank) finished the same cache first: keep theirs
        shutil.rmtree(building, ignore_errors=True)
    print(f"polydiff: {len(lengths):,} of {lines:,} lines tokenized in {info['seconds']} s", file=sys.stderr)


class _InProcess:
    """A stand-in for a one-process pool."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def imap(self, function, items):
        return map(function, items)
