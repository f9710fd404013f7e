"""``PackedLines``: a corpus held as one byte buffer and offsets, read like a list of strings.

1.6 million SMILES as Python strings take ~150 MB in ~1.6 million objects, and a data loader
worker forked from the training process copies every page whose objects it touches: reading a
string bumps its reference count, which writes to its page. As one numpy buffer the same lines
take ~70 MB with no per-line object, the workers share its pages for the whole run, and a line
is decoded only when a batch asks for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np


class PackedLines(Sequence[str]):
    """Strings packed end to end (UTF-8) with their offsets.

    Args:
        lines: the strings; none may hold a newline.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        # A line read with ``surrogateescape`` (a byte that is not UTF-8) packs as the bytes it was.
        encoded = [line.encode(errors="surrogateescape") for line in lines]
        sizes = np.fromiter((len(line) for line in encoded), dtype=np.int64, count=len(encoded))
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    @classmethod
    def _from_parts(cls, buffer: np.ndarray, offsets: np.ndarray) -> PackedLines:
        packed = cls.__new__(cls)
        packed._buffer, packed._offsets = buffer, offsets
        return packed

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"line {index} of {len(self)}")
        return self._buffer[self._offsets[index] : self._offsets[index + 1]].tobytes().decode(errors="surrogateescape")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    @property
    def lengths(self) -> np.ndarray:
        """Bytes per line (characters, for ASCII SMILES), without decoding any."""
        return np.diff(self._offsets)

    def subset(self, keep: np.ndarray) -> PackedLines:
        """The lines where the boolean mask ``keep`` is True, in order, packed anew."""
        sizes = self.lengths
        offsets = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
        np.cumsum(sizes[keep], out=offsets[1:])
        return PackedLines._from_parts(self._buffer[np.repeat(keep, sizes)], offsets)
