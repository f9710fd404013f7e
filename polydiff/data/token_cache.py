"""Token caches: a corpus converted and tokenized once, kept on disk as memory-mapped numpy arrays.

A corpus of 10^7 SMILES as Python strings takes gigabytes of RAM, and converting it to
SELFIES costs about half a millisecond a line, every epoch. A token cache does both once:
worker processes convert and tokenize the file in chunks, and the token ids of every kept
line are written end to end into ``ids.bin`` (one byte a token for vocabularies under 256,
two otherwise), with ``offsets.npy`` marking where each line starts. Training then reads
sequences straight from the memory map: the operating system pages in what is used, every
DDP rank on a node shares the same pages, and RAM stays flat whatever the corpus size.

The cache lives in ``$POLYDIFF_CACHE_DIR/tokens/<key>/``, keyed by the file's SHA-256, the
tokenizer (its serialized JSON), the representation, ``max_length`` and the columns read, so
a changed file or tokenizer is tokenized anew. Numeric CSV columns that a model is conditioned on
(``data.conditions``) are kept beside the ids, one float32 row per kept line (``values.npy``).
It is written into a private folder and renamed into place, so a killed build leaves nothing
half-written behind.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout

from polydiff.chem.molecules import rdkit_silenced
from polydiff.data.batching import MoleculeCollator
from polydiff.data.screening import REASONS, OnBadLine, refuse_bad_line, screen, summary
from polydiff.data.tokenizer import load_tokenizer
from polydiff.utils.cache import cache_dir, file_digest
from polydiff.utils.files import is_csv, iter_rows
from polydiff.utils.parallel import default_jobs, progress_bars

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
        columns = self.info.get("value_columns", [])
        # (kept lines, columns) float32, NaN where a cell was empty or not a number.
        self.values = np.load(folder / "values.npy", mmap_mode="r") if columns else np.zeros((len(self), 0))
        self.value_columns: list[str] = columns

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

    def values(self, columns: Sequence[str]) -> np.ndarray:
        """(sequences, len(columns)) float32: the cache's CSV ``columns`` of these sequences."""
        order = [self.cache.value_columns.index(column) for column in columns]
        return np.asarray(self.cache.values[self.indices][:, order], dtype=np.float32)


class WithValues(torch.utils.data.Dataset):
    """Sequences paired with a row of values each: item i is (sequence i, values[i])."""

    def __init__(self, sequences: torch.utils.data.Dataset, values: np.ndarray) -> None:
        if len(values) != len(sequences):
            raise ValueError(f"{len(values)} rows of values for {len(sequences)} sequences")
        self.sequences, self.values = sequences, values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.sequences[index], self.values[index]


@cache
def _encoder(tokenizer_name: str, max_length: int, representation: str):
    return MoleculeCollator(tokenizer_name, max_length, representation)


# Cells that mean "no value", as pandas reads them by default (compared in lower case).
MISSING_VALUES = frozenset({
    "", "n/a", "na", "nan", "-nan", "null", "none", "<na>", "#n/a", "#n/a n/a", "#na",
    "1.#ind", "-1.#ind", "1.#qnan", "-1.#qnan",
})  # fmt: skip


def _number(text: str) -> float | None:
    """A CSV cell as a finite float; NaN for a missing one (empty, ``n/a``, ...: a value left free),
    None for one that is not a finite number (``1.5 K``, ``inf``): its line is a bad line."""
    if text.strip().lower() in MISSING_VALUES:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def encode_chunk(
    task: tuple,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int], dict[str, tuple[int, str]]]:
    """Encodes one chunk of lines (runs in a worker).

    Returns:
        The kept lines' token ids end to end, their lengths, their values ((kept, columns)
        float32), the skipped lines counted by reason, and the first skipped line of each reason
        (its index in the file, its text).
    """
    start, rows, tokenizer_name, max_length, representation, kind = task
    lines = [line for line, _ in rows]
    with rdkit_silenced():  # one RDKit message per bad line would bury the summary
        reasons = [screen(line, kind) for line in lines]
    usable = [line for line, reason in zip(lines, reasons, strict=True) if reason is None]
    encoded = iter(_encoder(tokenizer_name, max_length, representation).encode(usable))
    kept, values, dropped, examples = [], [], Counter(), {}
    for index, ((line, cells), reason) in enumerate(zip(rows, reasons, strict=True)):
        result = next(encoded) if reason is None else reason
        numbers = [_number(cell) for cell in cells]
        text = line
        if not isinstance(result, str) and None in numbers:
            result, text = "non-numeric value", cells[numbers.index(None)]  # the cell shows what is wrong
        if isinstance(result, str):
            dropped[result] += 1
            examples.setdefault(result, (start + index, text))
        else:
            kept.append(result)
            values.append(numbers)
    lengths = np.fromiter(map(len, kept), dtype=np.int64, count=len(kept))
    flat = np.fromiter((i for x in kept for i in x), dtype=np.int64, count=int(lengths.sum()))
    columns = len(rows[0][1]) if rows else 0
    return flat, lengths, np.array(values, dtype=np.float32).reshape(len(kept), columns), dict(dropped), examples


def cache_key(
    path: Path, smiles_column: str, encoding: tuple[str, int, str, str], value_columns: Sequence[str] = ()
) -> str:
    """The folder name of a file's token cache: a digest of everything the ids (and values) depend on."""
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
    if is_csv(path):  # (absent otherwise, as below) the same bytes named .txt are lines, not a table
        key["csv"] = True
    if kind == "polymer":  # (absent otherwise, as below) before, a line was a unit by its two *
        key["units"] = "parsed"
    if value_columns:  # (absent otherwise: caches built before values were kept stay valid)
        key["values"] = list(value_columns)
        key["bad_values"] = "skipped"  # before, a non-numeric cell was kept as a free value
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def token_cache(
    path: str | Path,
    tokenizer_name: str,
    max_length: int,
    representation: str,
    smiles_column: str = "SMILES",
    kind: str = "molecule",
    on_bad_line: OnBadLine = "skip",
    n_jobs: int | None = None,
    progress: bool | None = None,
    value_columns: Sequence[str] = (),
) -> TokenCache:
    """The token cache of a file of SMILES, built on first use (in ``n_jobs`` processes).

    Args:
        path: one SMILES per line (.txt/.smi, or .csv with ``smiles_column``; .gz allowed).
        tokenizer_name: the tokenizer (``smiles``, ``selfies`` or a local path).
        max_length: longest kept sequence, [CLS] and [SEP] included; longer lines are dropped.
        representation: ``smiles``, ``kekule_smiles`` or ``selfies``.
        smiles_column: the CSV column to read.
        kind: ``molecule``, or ``polymer`` to skip lines without exactly two ``*``.
        on_bad_line: ``skip`` lines that cannot be used (counted by reason), or stop at the
            first with an ``error`` naming its line.
        n_jobs: worker processes; None for every core.
        progress: draw a progress bar; None draws one when stderr is a terminal.
        value_columns: numeric CSV columns kept beside the ids (``TokenCache.values``).

    Returns:
        The cache, memory-mapped.
    """
    path = Path(path)
    encoding = (tokenizer_name, max_length, representation, kind)
    value_columns = list(value_columns)
    folder = cache_dir() / "tokens" / cache_key(path, smiles_column, encoding, value_columns)
    if not (folder / "cache.json").is_file():
        # One process builds; another run on the same file (a sweep started at once) waits and reads it.
        # The lock files stay (deleting one another process waits on would let a third build alongside).
        locks = cache_dir() / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        lock = FileLock(locks / f"tokens-{folder.name}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"polydiff: waiting for another process to finish tokenizing {path}", file=sys.stderr)
            lock.acquire()
        try:
            if not (folder / "cache.json").is_file():  # the other process may have built it meanwhile
                _build(path, folder, encoding, (smiles_column, value_columns), on_bad_line, n_jobs, progress)
        finally:
            lock.release()
    cached = TokenCache(folder)
    if cached.dropped and on_bad_line == "error":  # built before under on_bad_line: skip; its first bad line
        reason = min(cached.dropped, key=lambda name: cached.info["examples"][name][0])
        refuse_bad_line(path, reason, *cached.info["examples"][reason], tokenizer_name)
    if not len(cached):
        raise ValueError(f"{path}: no usable line ({summary(cached.dropped, cached.info['examples']) or 'empty file'})")
    return cached


def _chunks(path: Path, columns: tuple[str, list[str]], size: int):
    chunk = []
    for row in iter_rows(path, *columns):
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _remove_abandoned_builds(folder: Path) -> None:
    """Removes half-built copies of ``folder``: under the build lock no other process is building
    it, so any left are from a build killed midway, which could not clean up after itself."""
    for abandoned in folder.parent.glob(f".{folder.name}.*.building"):
        shutil.rmtree(abandoned, ignore_errors=True)


def _build(
    path: Path,
    folder: Path,
    encoding: tuple,
    columns: tuple[str, list[str]],
    on_bad_line: str,
    n_jobs: int | None,
    progress,
) -> None:
    started = time.perf_counter()
    vocab_size = len(load_tokenizer(encoding[0]))
    dtype = np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.int32
    _remove_abandoned_builds(folder)
    building = folder.with_name(f".{folder.name}.{os.getpid()}.building")
    building.mkdir(parents=True, exist_ok=True)
    print(f"polydiff: tokenizing {path} once into {folder}", file=sys.stderr)
    lengths, values, dropped, examples, lines = [], [], Counter(), {}, 0
    header = 1 if ".csv" in path.suffixes else 0  # line numbers count the CSV header
    chunks = enumerate(_chunks(path, columns, CHUNK_LINES))
    tasks = ((i * CHUNK_LINES, chunk, *encoding) for i, chunk in chunks)
    n_jobs = n_jobs or default_jobs()
    try:
        with (
            progress_bars(sys.stderr.isatty() if progress is None else progress) as bars,
            open(building / "ids.bin", "wb") as ids,
            multiprocessing.get_context().Pool(n_jobs) if n_jobs > 1 else _InProcess() as pool,
        ):
            bar = bars.add_task("tokenizing", total=None)
            # A few chunks per worker at a time: Pool.imap would read the whole file into its queue.
            while window := list(itertools.islice(tasks, 4 * n_jobs)):
                for flat, chunk_lengths, chunk_values, chunk_dropped, chunk_examples in pool.imap(encode_chunk, window):
                    for reason, (index, text) in chunk_examples.items():
                        examples.setdefault(reason, (index + 1 + header, text))
                    if examples and on_bad_line == "error":
                        reason, (line_number, text) = min(examples.items(), key=lambda item: item[1][0])
                        refuse_bad_line(path, reason, line_number, text, encoding[0])
                    flat.astype(dtype).tofile(ids)
                    lengths.append(chunk_lengths)
                    values.append(chunk_values)
                    dropped.update(chunk_dropped)
                    lines += len(chunk_lengths) + sum(chunk_dropped.values())
                    bars.update(bar, completed=lines)
    except BaseException:  # a bad line under on_bad_line: error, a full disk, Ctrl-C: leave nothing behind
        shutil.rmtree(building, ignore_errors=True)
        raise
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    np.save(building / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    if columns[1]:
        np.save(building / "values.npy", np.concatenate(values) if values else np.zeros((0, len(columns[1])), "f4"))
    info = {
        "source": str(path),
        "lines": lines,
        "kept": len(lengths),
        "dropped": {reason: dropped[reason] for reason in REASONS if dropped[reason]},
        "examples": examples,
        "dtype": np.dtype(dtype).name,
        "value_columns": columns[1],
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
