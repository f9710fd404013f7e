"""``DigestSet``: membership in a large set of strings (a training corpus, for novelty) without a
Python set of them."""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterable

import numpy as np


def _digest(line: str) -> int:
    return int.from_bytes(hashlib.blake2b(line.encode(), digest_size=8).digest(), "little", signed=True)


class DigestSet(Container[str]):
    """Membership in a large set of strings, kept as sorted 64-bit digests: 8 bytes a line where a
    Python set of the strings takes ~130. A digest collision would count an unseen string as seen;
    for n lines the chance per query is about n / 2^64 (1e-13 for the MOSES training set).

    Args:
        lines: the strings of the set.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self._digests = np.unique(np.fromiter((_digest(line) for line in lines), dtype=np.int64))

    def __contains__(self, line: object) -> bool:
        if not isinstance(line, str):
            return False
        digest = _digest(line)
        index = int(np.searchsorted(self._digests, digest))
        return index < len(self._digests) and int(self._digests[index]) == digest

    def __len__(self) -> int:
        return len(self._digests)
