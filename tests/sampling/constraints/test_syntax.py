"""The SMILES automaton accepts real SMILES token by token and refuses malformed prefixes and ends."""

import math

import pytest
import torch
from rdkit import Chem

from polydiff.chem.molecules import quiet_rdkit
from polydiff.data.tokenizer import load_tokenizer
from polydiff.diffusion import DiffusionConfig
from polydiff.model.bert_diffusion import ModelConfig
from polydiff.sampling import SamplingConfig
from polydiff.sampling.constraints.syntax import SmilesSyntax
from polydiff.sampling.generate import generate
from polydiff.tasks.diffusion_task import DiffusionTask

TOKENIZER = load_tokenizer("smiles")
SYNTAX = SmilesSyntax(TOKENIZER)
SEP = TOKENIZER.sep_token_id


def accepted(strings: list[str], end: bool = True, syntax: SmilesSyntax = SYNTAX) -> list[bool]:
    """Whether every token of each string (and then [SEP], if ``end``) is allowed when it comes;
    the strings run through the automaton together, as a sampler's rows do."""
    ids = [TOKENIZER(s, add_special_tokens=False)["input_ids"] + ([SEP] if end else []) for s in strings]
    lengths = torch.tensor([len(row) for row in ids])
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(row) for row in ids], batch_first=True, padding_value=SEP)
    state = syntax.start(len(strings), torch.device("cpu"))
    ok = torch.ones(len(strings), dtype=torch.bool)
    for position in range(tokens.shape[1]):
        taken = syntax.allowed(state).gather(1, tokens[:, position : position + 1]).squeeze(-1)
        ok &= taken | (position >= lengths)  # past its end a row takes the padding, whatever it is
        state = syntax.advance(state, tokens[:, position])
    return ok.tolist()


def accepts(smiles: str, end: bool = True) -> bool:
    return accepted([smiles], end)[0]


def test_every_moses_molecule_and_polymer_is_accepted(moses_sample):
    polymers = ["*CC(*)c1ccccc1", "*Oc1ccc(C(C)(C)c2ccc(O*)cc2)cc1", "*C(=O)N[C@@H](C)C(*)=O", "C1CC1.O"]
    strings = [*moses_sample, *polymers]
    rejected = [s for s, ok in zip(strings, accepted(strings), strict=True) if not ok]
    assert rejected == []
    assert accepted(["CC(C", "CC(C)C"]) == [False, True]  # rows that go wrong do not hide among the rest


@pytest.mark.parametrize(
    ("smiles", "end"),
    [
        ("CC(C", True),  # open parenthesis at the end
        ("c1ccc", True),  # open ring at the end
        ("CC=", True),  # a bond with nothing after it
        ("C)", False),  # closing a parenthesis never opened
        ("C(", True),
        ("C11", False),  # an atom bonded to itself
        ("C(C)1", False),  # a ring label after a branch
        ("(C", False),  # a branch before any atom
        ("C(-1CC1)C", False),  # a branch opens with an atom, after its bond if any
        ("C1CC(=1)C", False),
        ("C==C", False),
        ("C.(C)", False),
        ("CC@", False),  # chirality belongs inside brackets
        ("CC(C)(C)(C)C", False),  # five bonds on a carbon
        ("CN(C)(C)C", False),
        ("FC(F)(F)F=O", False),
        ("CF(C)", False),
        ("C1CCN1(C)(C)", False),  # the ring bond counts
        ("O=C1CC(=O)O1=C", False),
        ("C#C=C", False),
        # No bond left anywhere to close an open ring: only a '.' could go on (refused below).
        ("C1CC#N", False),
        ("C1CC(C)(C)(C)", False),
        ("C1CC(C#N)(C)(C)", False),
        # Bracket atoms as RDKit counts their charge and hydrogens.
        ("C[O-]C", False),
        ("C[N+](C)(C)(C)C", False),
        ("C[nH]1cccc1", False),
        ("C[NH3+]C", False),
    ],
)
def test_malformed_smiles_are_refused(smiles, end):
    assert not accepts(smiles, end)
    assert Chem.MolFromSmiles(smiles) is None  # RDKit agrees


def test_a_metal_cation_is_a_counter_ion_that_takes_no_bond():
    assert Chem.MolFromSmiles("CC(=O)O.[Na+]C") is not None  # RDKit reads a methyl radical on Na+
    assert accepted(["CC(=O)[O-].[Na+]", "[Ca+2].[O-]C(=O)C", "CC(=O)O.[Na+]C", "[K+]1CC1", "C[Zn+2]C"]) == [
        True, True, False, False, True  # zinc is no alkali or alkaline-earth metal
    ]  # fmt: skip


def test_ring_labels_do_not_span_a_dot():
    assert Chem.MolFromSmiles("C1CC.C1") is not None  # valid SMILES, but no training string does this
    assert not accepts("C1CC.", end=False)
    assert accepts("C1CC(C#N)C1") and accepts("C1CC1.CC#N")


def test_repeat_units_keep_exactly_two_single_bonded_attachment_points():
    units = SmilesSyntax(TOKENIZER, stars=2)
    good = [
        "*C*",
        "*-C-*",
        "*CC(*)c1ccccc1",
        "*Oc1ccc(C(C)(C)c2ccc(O*)cc2)cc1",
        "*C(=O)N[C@@H](C)C(*)=O",
        "*c1ccc(*)s1",
        "*C1CC1*",
        "[*]CCO[*]",  # bracketed and labelled attachment points are the same atom as *
        "[*:1]CCO[*:2]",
    ]
    assert accepted(good, syntax=units) == [True] * len(good)
    salts = ["*CC(*)C(=O)[O-].[Na+]", "[Na+].*CC(*)C(=O)[O-]"]  # a counter-ion before or after the unit
    assert accepted(salts, syntax=units) == [True, True]
    bad = [
        ("*CC", True),  # one attachment point at the end
        ("CC", True),  # none
        ("*CC(*)C*", False),  # a third
        ("*C=*", False),  # a double bond to *
        ("*C(=*)", False),
        ("[*]C=[*]", False),
        ("[*:1]CC([*:2])[*]", False),
        ("**", False),  # no atom between the two: no unit
        ("*-*", False),
        ("*(*", False),
        ("*C.C*", False),  # two molecules, no backbone between the *
        ("*.", False),
    ]
    for smiles, end in bad:
        assert not accepted([smiles], end, units)[0], smiles
    # A molecule model counts no *: three are as good as two, and an end without any is fine.
    assert accepted(["*CC(*)C*", "CC"]) == [True, True]


def test_a_polymer_fragment_left_with_no_bond_to_give_is_refused_where_only_a_dot_could_follow():
    """After ``*CC`` a Cl would end the chain with one * written: nothing may follow but [SEP] or
    '.', and the unit may take neither. Before any *, a '.' may follow (a counter-ion first), unless
    the model never writes one, as a model of the bundled polymer corpus never does."""
    with_dots, without = SmilesSyntax(TOKENIZER, stars=2), SmilesSyntax(TOKENIZER, stars=2, dots=False)
    for units in (with_dots, without):
        assert accepted(["*CCl", "*CC(Cl)*", "*C(Cl)C*"], end=False, syntax=units) == [False, True, True]
    assert accepted(["ClBr", "Cl"], end=False, syntax=with_dots) == [True, True]
    assert accepted(["ClBr", "Cl"], end=False, syntax=without) == [False, True]
    good = ["*CC(*)c1ccccc1", "*Oc1ccc(C(C)(C)c2ccc(O*)cc2)cc1", "*C(=O)N[C@@H](C)C(*)=O", "*c1ccc(*)s1"]
    assert accepted(good, syntax=without) == [True] * len(good)


def test_with_little_room_left_only_tokens_that_can_still_end_in_time_are_allowed():
    ids = TOKENIZER("CC(C", add_special_tokens=False)["input_ids"]
    state = SYNTAX.start(1, torch.device("cpu"))
    for token in ids:
        state = SYNTAX.advance(state, torch.tensor([token]))
    names = lambda allowed: {SYNTAX.tokens[i] for i in allowed[0].nonzero().flatten().tolist()}  # noqa: E731
    assert names(SYNTAX.allowed(state, torch.tensor([1]))) == {")"}  # then [SEP], in the one position left
    assert names(SYNTAX.allowed(state, torch.tensor([0]))) == set()  # nothing can end it now
    roomy = names(SYNTAX.allowed(state, torch.tensor([3])))
    assert {")", "C", "O"} <= roomy and "(" not in roomy  # "(" needs an atom and two ")" more
    # A ring label needs two atoms before its closure (CC(C1C1 bonds two atoms twice): 1, C, C, 1, ), [SEP].
    assert "1" not in roomy and "1" in names(SYNTAX.allowed(state, torch.tensor([5])))
    # An aromatic atom with no ring open needs one: a label, two atoms, the closure, then ")" and [SEP].
    assert "c" not in names(SYNTAX.allowed(state, torch.tensor([5])))
    assert "c" in names(SYNTAX.allowed(state, torch.tensor([6])))


def test_a_ring_open_at_a_branchs_end_needs_a_token_before_its_closure():
    state = SYNTAX.start(1, torch.device("cpu"))
    for token in TOKENIZER("C1CC(C", add_special_tokens=False)["input_ids"]:
        state = SYNTAX.advance(state, torch.tensor([token]))
    names = lambda allowed: {SYNTAX.tokens[i] for i in allowed[0].nonzero().flatten().tolist()}  # noqa: E731
    # After ")" no ring closes (C1CC(C)1 is no SMILES): an atom first, then 1 and [SEP].
    assert names(SYNTAX.allowed(state, torch.tensor([2]))) == {"1"}
    assert ")" in names(SYNTAX.allowed(state, torch.tensor([3])))


def test_a_polymer_row_keeps_room_for_the_attachment_points_it_still_needs():
    units = SmilesSyntax(TOKENIZER, stars=2)
    names = lambda allowed: {units.tokens[i] for i in allowed[0].nonzero().flatten().tolist()}  # noqa: E731
    stars = {"*", "[*]", "[*:1]", "[*:2]"}
    state = units.start(1, torch.device("cpu"))
    for token in TOKENIZER("CC", add_special_tokens=False)["input_ids"]:
        state = units.advance(state, torch.tensor([token]))
    assert names(units.allowed(state, torch.tensor([1]))) == set()  # two * and [SEP] cannot fit in one
    # Nor in two: an atom leaves no room for both, and CC* would leave its one * with nothing after.
    assert names(units.allowed(state, torch.tensor([2]))) == set()
    assert "C" in names(units.allowed(state, torch.tensor([3]))) and not stars & names(units.allowed(state))
    state = units.start(1, torch.device("cpu"))
    for token in TOKENIZER("*CC", add_special_tokens=False)["input_ids"]:
        state = units.advance(state, torch.tensor([token]))
    assert names(units.allowed(state, torch.tensor([1]))) == stars  # the second *, then [SEP]


def test_a_one_token_block_smiles_model_writes_only_parsable_strings():
    quiet_rdkit()  # the unconstrained strings fail to parse loudly
    torch.manual_seed(0)
    config = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)
    task = DiffusionTask(model_config=config, diffusion_config=DiffusionConfig(block_size=1)).eval()
    # Aliphatic MOSES tokens: near-uniform draws of aromatic atoms would mostly meet kekulization dead ends.
    tokens = ["C", "(", ")", "1", "2", "3", "4", "5", "6", "O", "N", "S", "F", "Cl", "Br", "=", "#", "-", "[SEP]"]
    task.token_histogram[TOKENIZER.convert_tokens_to_ids(tokens)] = 1.0
    with torch.no_grad():  # an untrained model ending after ~10 tokens: its draws are near uniform
        task.output_projection[-1].bias[SEP] = math.log(len(tokens) / 10)
    constrained = generate(task, 64, seed=0)
    free = generate(task, 64, SamplingConfig(syntax=False), seed=0)
    # A row ends where its string may end, or, at a dead end (no token keeps it completable; with
    # near-uniform draws some rows meet one), where it stands.
    ended = accepted(constrained)
    assert sum(ended) >= 40
    parsed = [Chem.MolFromSmiles(s, sanitize=False) is not None for s in constrained]
    assert all(p for p, e in zip(parsed, ended, strict=True) if e)
    # Without the automaton many do not parse (unclosed rings and branches).
    assert sum(Chem.MolFromSmiles(s, sanitize=False) is not None for s in free) < 48


def test_the_state_table_answers_as_the_field_wise_automaton(moses_sample):
    """Looked up by state id, the answers and the next states are those the automaton computes from
    the fields, at every prefix of the molecules: across the table's growth (a fresh automaton
    starts with room for 256 states, and these strings meet more) and for rows that share states."""
    syntax = SmilesSyntax(TOKENIZER)
    ids = [TOKENIZER(s, add_special_tokens=False)["input_ids"] + [SEP] for s in moses_sample]
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(row) for row in ids], batch_first=True, padding_value=SEP)
    lengths = torch.tensor([len(row) for row in ids])
    state, fields = syntax.start(len(ids), "cpu"), syntax._start_fields(len(ids))
    room = torch.randint(0, 40, (len(ids),), generator=torch.Generator().manual_seed(0))
    columns = torch.tensor([SEP, *TOKENIZER.convert_tokens_to_ids(["c", "C", "(", ")", "1", "="])])
    for position in range(tokens.shape[1]):
        live = position < lengths
        by_rules, debt = (torch.from_numpy(answer) for answer in syntax._answers(fields))
        looked_up = syntax.allowed_within(state, room)
        assert torch.equal(looked_up[0][live], by_rules[live])
        assert torch.equal(looked_up[1][live], (by_rules & (debt <= room.unsqueeze(-1)))[live])
        for whole, narrowed in zip(looked_up, syntax.allowed_within(state, room, columns), strict=True):
            assert torch.equal(narrowed, whole[:, columns])  # the answers for some tokens alone
        for name, value in vars(state.fields).items():
            assert torch.equal(value[live], torch.from_numpy(getattr(fields, name))[live]), name
        state = syntax.advance(state, tokens[:, position])
        fields = syntax._advance(fields, tokens[:, position].numpy())
    assert syntax.table.size > 256
    assert syntax.table.size < tokens.numel() / 4  # prefixes share states: the point of the table
