"""The kekulization check refuses no prefix of a real molecule, and refuses a broken aromatic system
at the first token that no continuation can repair."""

import math
import random

import pytest
import torch
from rdkit import Chem

from polydiff.chem.molecules import quiet_rdkit
from polydiff.data.tokenizer import load_tokenizer
from polydiff.sampling import SamplingConfig
from polydiff.sampling.blockwise import draw_completable, drawn_by
from polydiff.sampling.constraints.kekulization import MoleculePrefix

TOKENIZER = load_tokenizer("smiles")
VOCABULARY = sorted(TOKENIZER.get_vocab(), key=TOKENIZER.get_vocab().get)


def prefix_of(smiles: str) -> MoleculePrefix:
    prefix = MoleculePrefix()
    for token in TOKENIZER.tokenize(smiles):
        prefix = prefix.then(token)
    return prefix


def first_refusal(smiles: str) -> str | None:
    """The prefix (tokens joined) whose last token makes the molecule impossible to complete, with
    [SEP] as the last token; None if every prefix can still be completed."""
    prefix, written = MoleculePrefix(), ""
    for token in [*TOKENIZER.tokenize(smiles), "[SEP]"]:
        prefix, written = prefix.then(token), written + token
        if not prefix.can_complete():
            return written
    return None


def test_no_prefix_of_a_moses_molecule_or_polymer_is_refused(moses_sample):
    polymers = ["*Oc1ccc(C(C)(C)c2ccc(O*)cc2)cc1", "*c1ccc(*)s1", "*Nc1ccc(NC(=O)c2ccc(C(*)=O)cc2)cc1"]
    refused = {s: first_refusal(s) for s in [*moses_sample, *polymers] if first_refusal(s) is not None}
    assert refused == {}


@pytest.mark.parametrize(
    ("smiles", "refused_at"),
    [
        ("CcC", "CcC"),  # the c is final, on no ring
        ("CC1C1", "CC1C1"),  # a ring bond that duplicates a chain bond
        ("c1ccn(C)cc1", "c1ccn(C)cc1"),  # a pyridine ring with a three-bonded n: five c, no pairing
        ("Nc1cccc(C)n1(C)", "Nc1cccc(C)n1("),  # the same, refused at the bond that would make it
        ("Cc1ccccc1=O", "Cc1ccccc1="),  # a benzene carbon cannot take an exocyclic double bond
        ("c1ccc(C)(C)cc1", "c1ccc(C)(C)"),  # four bonds on an aromatic carbon
        ("CCc1nc(-c2cc(N)nnc2SC)o1", "CCc1nc(-c2cc(N)nnc2SC)o1"),  # a four-membered oxazole
        ("Cc1nc(-c=O)ccc1", "Cc1nc(-c=O"),  # the O is full: the c can reach a ring through nothing
        ("Cc1nnc(C)s1C", "Cc1nnc(C)s1C"),  # a thiophene S with a substituent
        # A ring passes through two of an atom's bonds: after the C, the O and the NH have one left.
        ("Co1cccc1", "Co"),
        ("C[nH]1cccc1", "C[nH]"),
        ("Cl[nH](-C)c1ccccc1", "Cl[nH]"),
        ("c1ccccc1-[nH]1cccc1", "c1ccccc1-[nH]"),
        # With rings 1 and 2 open, the n that closes ring 3 must bond again (to stay on a ring, the
        # c(=O) needs a path through it): a pyrrole-type n, which leaves five c to pair.
        ("CC(Cn1nc(C)c2c(=O)c3cccc(OC)n3)C", "CC(Cn1nc(C)c2c(=O)c3cccc(OC)n3"),
        # The last atom may still take =O (O=c1cccc1 and Cn1ccccc1=O are valid), so only the end
        # settles these:
        ("c1cccc1", "c1cccc1[SEP]"),
        ("c1ccnc1", "c1ccnc1[SEP]"),  # pyrrole without its H
        ("Cn1ccccc1", "Cn1ccccc1[SEP]"),
        # A written = between aromatic carbons is a double bond, and each of its two carbons still
        # needs a ring double bond along its other ring bond: in a ring of five, one c is left out.
        ("c1cc=cc1=O", "c1cc=cc1"),
        # The methyl's c has no valence left for a ring double bond; the last c is left without a
        # partner, unless a substituent fills its valence too (Cc1=cc=cc=c1C is valid).
        ("Cc1=cc=cc=c1", "Cc1=cc=cc=c1[SEP]"),
        # The bond to the phenyl is aromatic as written but on no ring: the c needs a double bond
        # that none of its ring bonds can give.
        ("C1Cc(c2ccccc2)CC1", "C1Cc(c2ccccc2)C"),
    ],
)
def test_an_unkekulizable_aromatic_system_is_refused_where_it_becomes_certain(smiles, refused_at):
    quiet_rdkit()
    assert Chem.MolFromSmiles(smiles) is None  # RDKit agrees that the whole string is invalid
    assert first_refusal(smiles) == refused_at


@pytest.mark.parametrize(
    "smiles",
    [
        "c1ccc2ccccn12",
        "O=c1cccc[nH]1",
        "Cn1cccc1",
        "c1ccccc1c1ccccc1",
        "c1ccc[n+](C)c1",
        "O=c1cccc1",
        "Cn1ccccc1=O",
        "O=s1cccc1",  # a thiophene S-oxide: the s may take a substituent on a double bond
        "CC(c3cccc(C)n3)C",  # the n stays pyridine-type: the branch closes without it
        # A written = between aromatic atoms stays a double bond, and RDKit still asks the c for
        # a ring double bond while its valence has room: c1=ccccc1 is read as C1=C=CC=CC=1.
        "c1=ccccc1",
        "Cc1=cc=cc=c1C",
        # An aromatic atom with no aromatic bond is asked for no double bond.
        "C1CcCC1",
        "C1CnC=C1",
        "C1C(=cO1)C",
        "CC1cc(=C1)",
    ],
)
def test_valid_aromatic_systems_pass(smiles):
    assert Chem.MolFromSmiles(smiles) is not None
    assert first_refusal(smiles) is None


def test_whole_strings_with_a_double_bond_written_inside_a_ring_are_judged_as_rdkit_judges_them(moses_sample):
    """An explicit = between two neighbouring aromatic carbons, at a seeded place of each molecule:
    where the check and RDKit disagree, a sampler refuses good tokens or keeps bad ones."""
    quiet_rdkit()
    rng = random.Random(0)
    disagreements = []
    for smiles in moses_sample:
        tokens = TOKENIZER.tokenize(smiles)
        pairs = [i for i in range(1, len(tokens)) if tokens[i - 1] == tokens[i] == "c"]
        if pairs:
            i = rng.choice(pairs)
            mutated = "".join([*tokens[:i], "=", *tokens[i:]])
            if (first_refusal(mutated) is None) != (Chem.MolFromSmiles(mutated) is not None):
                disagreements.append(mutated)
    assert disagreements == []


def test_a_refused_draw_is_drawn_again_from_the_tokens_left():
    c, ring = VOCABULARY.index("C"), VOCABULARY.index("1")
    logits = torch.full((2, len(VOCABULARY)), -math.inf)
    logits[:, c] = 10.0  # "C" after "Cc" leaves the c on no ring
    logits[0, ring] = 0.0  # row 0 may open a ring instead; row 1 has nothing else
    prefixes = [prefix_of("Cc"), prefix_of("Cc")]
    tokens, after = draw_completable(
        logits, prefixes, VOCABULARY, drawn_by(SamplingConfig(), torch.Generator().manual_seed(0))
    )
    assert tokens[0] == ring and after[0] == prefix_of("Cc1")
    assert after[1] is None  # no token can keep row 1 valid (the sampler ends it)


def test_the_answer_a_prefix_inherits_is_the_answer_a_search_gives(moses_sample):
    """Extensions that touch no aromatic atom take their parent's yes without a search; along MOSES
    molecules and random well-formed continuations of them, every such answer is the search's."""
    from polydiff.sampling.constraints.syntax import SmilesSyntax

    syntax = SmilesSyntax(TOKENIZER)
    generator = torch.Generator().manual_seed(0)
    rows = [TOKENIZER.tokenize(smiles)[: 8 + i % 20] for i, smiles in enumerate(moses_sample[:200])]
    state = syntax.start(len(rows), "cpu")
    prefixes = [MoleculePrefix()] * len(rows)
    ended = [False] * len(rows)
    inherited = 0
    for step in range(60):
        allowed = syntax.allowed(state)
        candidates = torch.multinomial(allowed.float() + 1e-9, 6, generator=generator)
        tokens = []
        for row, prefix in enumerate(prefixes):
            if ended[row]:  # no token follows [SEP]: the row stays as it is
                tokens.append(TOKENIZER.sep_token_id)
                continue
            for token in [VOCABULARY[c] for c in candidates[row].tolist()]:
                child = prefix.then(token)
                inherited += "_completable" in child.__dict__
                assert child.can_complete() == child._search(), (prefix.atoms, token)
            written = rows[row][step] if step < len(rows[row]) else None
            tokens.append(TOKENIZER.convert_tokens_to_ids(written) if written else candidates[row, 0].item())
        state = syntax.advance(state, torch.tensor(tokens))
        prefixes = [
            prefix if done else prefix.then(VOCABULARY[token])
            for prefix, token, done in zip(prefixes, tokens, ended, strict=True)
        ]
        ended = [done or token == TOKENIZER.sep_token_id for done, token in zip(ended, tokens, strict=True)]
    assert inherited > 1000  # the shortcut is taken, and so tested


def on_a_cycle_by_definition(prefix: MoleculePrefix, free: set[int]) -> set[int]:
    """Bonds whose two atoms stay joined without them once a "future" node bonds to every free atom."""
    future = len(prefix.atoms)
    edges = [(i, j) for i, j, _ in prefix.bonds] + [(atom, future) for atom in free]
    ring = set()
    for k, (i, j) in enumerate(edges[: len(prefix.bonds)]):
        reached, stack = {i}, [i]
        while stack:
            atom = stack.pop()
            for m, (a, b) in enumerate(edges):
                other = b if a == atom else a if b == atom else None
                if m != k and other is not None and other not in reached:
                    reached.add(other)
                    stack.append(other)
        if j in reached:
            ring.add(k)
    return ring


def test_the_ring_bonds_carried_from_token_to_token_are_those_on_a_cycle(moses_sample):
    """The spanning forest and the cycles a prefix carries give, for any free atoms, the bonds on a
    cycle now or through future atoms: every prefix of MOSES molecules, and ring bonds across a dot
    (which join two trees)."""
    checked = 0
    across_dots = ["C1CC.CC1", "c1cc.cc1C2CC.C2", "C12CC.C1.CC2C(C3)C3", "C1.C1"]
    for smiles in [*moses_sample[:150], *across_dots]:
        prefix = MoleculePrefix()
        for token in TOKENIZER.tokenize(smiles):
            prefix = prefix.then(token)
            for free in (prefix.free_atoms(), set(), set(range(0, len(prefix.atoms), 3))):
                assert prefix._ring_bonds(free) == on_a_cycle_by_definition(prefix, free), (smiles, prefix.atoms, free)
                checked += 1
    assert checked > 10_000
