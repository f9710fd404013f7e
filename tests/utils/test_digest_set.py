"""DigestSet answers membership like the set it digests."""

from polydiff.utils.digest_set import DigestSet

LINES = ["CCO", "c1ccccc1", "", "N#N", "C[C@@H](O)C(=O)O", "ü"]  # an empty line and a non-ASCII one


def test_digest_set_answers_like_the_set():
    digests = DigestSet(LINES * 2)
    assert len(digests) == len(set(LINES))
    assert all(line in digests for line in LINES)
    assert not any(line in digests for line in ["CCN", "c1ccccc1 ", "OCC", None])
