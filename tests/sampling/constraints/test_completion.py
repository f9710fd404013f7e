"""CompletionSearch: whether a prefix can fill exactly the positions a fixed length leaves it and end valid."""

import pytest
import torch

from polydiff.data.tokenizer import load_tokenizer
from polydiff.sampling.constraints.completion import MAX_SLACK, CompletionSearch
from polydiff.sampling.constraints.kekulization import MoleculePrefix
from polydiff.sampling.constraints.syntax import SmilesSyntax

TOKENIZER = load_tokenizer("smiles")


def fits(smiles: str, room: int, stars: int | None = None) -> bool:
    """Whether the last token of ``smiles`` may be drawn with ``room`` tokens after it, [SEP] included."""
    syntax = SmilesSyntax(TOKENIZER, stars=stars)
    search = CompletionSearch(syntax)
    tokens = TOKENIZER(smiles, add_special_tokens=False)["input_ids"]
    state, prefix = syntax.start(1, torch.device("cpu")), MoleculePrefix()
    for token in tokens[:-1]:
        state, prefix = syntax.advance(state, torch.tensor([token])), prefix.then(syntax.tokens[token])
    last = tokens[-1]
    assert syntax.allowed(state, torch.tensor([room]))[0, last], "the automaton's own bound refuses it already"
    return search.fits(int(state.ids[0]), last, prefix.then(syntax.tokens[last]), room)


@pytest.mark.parametrize(
    ("smiles", "room", "expected"),
    [
        # The automaton lets an open ring close in one token; no Kekulé structure fits c1cc1 or c1cccc1.
        ("c1cc", 2, False),
        ("c1cc", 3, True),  # c1ccc1
        ("c1cccc", 2, False),
        ("c1cccc", 3, True),  # c1ccccc1
        # Exactly the room: a chain can always grow by a C while its last atom has a bond left.
        ("CC", 5, True),
        # No valence left and nothing open: it could end here, but not fill more positions.
        ("C(F)(F)F", 1, True),
        ("C(F)(F)F", 3, False),
        ("C(F)(F)F", 3 + MAX_SLACK + 4, False),  # far from the end, the lookahead sees it too
        # The closing parenthesis would leave a carbon with four bonds: only [SEP] may follow it.
        ("CC(F)(F)(F", 2, True),
        ("CC(F)(F)(F", 4, False),
        ("CC(F)(F)(F", 12, False),
    ],
)
def test_a_token_fits_where_some_continuation_fills_the_room_exactly(smiles, room, expected):
    assert fits(smiles, room) is expected


def test_a_polymer_unit_needs_room_for_its_second_attachment_point():
    assert fits("*CC", 2, stars=2)  # *CC*
    assert fits("*C(", 4, stars=2)  # *C(C)*
    assert fits("*CC*", 1, stars=2)
    assert not fits("*CC*", 3, stars=2)  # nothing but the end may follow the second *
    # A template with no * yet: a branch holds the first (the search writes "(" for a polymer), and
    # the atom a branch needs may be a * itself.
    assert fits("c1ccccc1C", 6, stars=2)  # c1ccccc1C(*)C*
    assert fits("C1CCCN1C(", 4, stars=2)  # C1CCCN1C(*)*
