"""PackedLines reads like the list it packs."""

import pickle

import numpy as np
import pytest

from polydiff.data.packed_lines import PackedLines

LINES = ["CCO", "c1ccccc1", "", "N#N", "C[C@@H](O)C(=O)O", "ü"]  # an empty line and a non-ASCII one


def test_packed_lines_read_like_the_list():
    packed = PackedLines(LINES)
    assert len(packed) == len(LINES)
    assert list(packed) == LINES and packed[1] == LINES[1] and packed[-1] == LINES[-1]
    assert packed[1:4] == LINES[1:4] and packed[::-2] == LINES[::-2]
    assert packed.lengths.tolist() == [len(line.encode()) for line in LINES]
    with pytest.raises(IndexError):
        packed[len(LINES)]


def test_a_subset_keeps_the_lines_where_the_mask_is_true_in_order():
    keep = np.array([True, False, True, True, False, True])
    assert list(PackedLines(LINES).subset(keep)) == [line for line, k in zip(LINES, keep, strict=True) if k]
    assert len(PackedLines(LINES).subset(np.zeros(len(LINES), dtype=bool))) == 0


def test_packed_lines_survive_a_worker_hand_off():
    """Loader workers under the spawn start method receive the dataset pickled."""
    assert list(pickle.loads(pickle.dumps(PackedLines(LINES)))) == LINES


def test_a_line_with_bytes_that_are_not_utf8_packs_as_read():
    line = b"CC\xff\xfeO".decode(errors="surrogateescape")  # as polydiff's readers decode a bad byte
    packed = PackedLines(["CCO", line])
    assert packed[1] == line and list(packed.lengths) == [3, 5]
