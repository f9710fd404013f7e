"""Fragment requests: the text a decoder writes around their attachment points, and the check that a
molecule keeps them."""

import pytest
from rdkit import Chem

from polydiff.chem.fragments import fragment_template, keeps_fragments


@pytest.mark.parametrize(
    ("request_", "task", "holes"),
    [
        ("[*]C(=O)c1ccccc1", "extend", 1),
        ("c1ccc([*])cc1[*]", "decorate", 2),
        ("O=C([*])Nc1ccc([*])cc1", "decorate", 2),
        ("[*]C(=O)O.[*]N1CCCC1", "link", 1),
        ("[*]C(F)(F)F", "extend", 1),  # a small group: written after the model's molecule
        ("O=[*]", "extend", 1),
        ("[*]S(=O)(=O)C", "extend", 1),  # its S keeps no H: the fragment without its [*] would have one
        ("[*][C@H](F)Cl", "extend", 1),  # and its stereocentre
        ("[*]/C=C/F", "extend", 1),
        ("[*]C(=O)O.[*][C@@H](C)S(=O)(=O)C", "link", 1),
    ],
)
def test_a_template_puts_back_the_fragment_where_its_holes_are_filled(request_, task, holes):
    """Filling every hole with one carbon (and, for a link, writing the second fragment there) gives
    the fragments joined through that carbon: the template is the fragment itself, split at its [*]."""
    template = fragment_template(request_)
    assert template.task == task and len(template.holes) == holes
    text = template.pieces[0]
    for piece in template.pieces[1:]:
        text += "C" + (template.suffix or "") + piece
    filled = Chem.MolFromSmiles(text)
    assert filled is not None
    expected = Chem.MolFromSmiles(request_.split(".")[0].replace("[*]", "C"))
    if template.suffix and template.task == "extend":  # the group itself is the suffix
        expected = Chem.MolFromSmiles(request_.replace("[*]", "C"))
    assert filled.HasSubstructMatch(expected)
    assert keeps_fragments(text, request_.split("."))


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ("c1ccccc1", "one fragment with"),
        ("[*]C.[*]N.[*]O", "one fragment with"),
        ("[*]CC[*].[*]N", "one fragment with"),
        ("C1CC[*", "not a SMILES"),
        ("C[*](C)C", "exactly one bond"),
        ("[*][*]", "no atom besides"),
    ],
)
def test_a_request_that_is_not_a_fragment_task_is_refused(request_, message):
    with pytest.raises(ValueError, match=message):
        fragment_template(request_)


def test_fragments_must_sit_on_atoms_of_their_own():
    fragments = ["[*]C(=O)O", "[*]N1CCCC1"]
    assert keeps_fragments("O=C(O)CCN1CCCC1", fragments)
    assert keeps_fragments("O=C(O)N1CCCC1", fragments)  # an attachment point may be the other's atom
    assert not keeps_fragments("CCN1CCCC1", fragments)
    assert not keeps_fragments("CC(=O)O", ["[*]C(=O)O", "[*]C(=O)O"])  # one acid cannot be both
    assert keeps_fragments("OC(=O)CC(=O)O", ["[*]C(=O)O", "[*]C(=O)O"])
    assert not keeps_fragments("not a molecule", fragments)
    # A substituent only where the fragment has a [*]: a tertiary amide is not N-substituted benzamide.
    assert keeps_fragments("c1ccccc1C(=O)NC", ["c1ccccc1C(=O)N[*]"])
    assert not keeps_fragments("c1ccccc1C(=O)N(C)C", ["c1ccccc1C(=O)N[*]"])
    assert not keeps_fragments("Cc1ccccc1C(=O)NC", ["c1ccccc1C(=O)N[*]"])
    assert keeps_fragments("Cc1ccccc1", ["[1*]c1ccccc1"]) and keeps_fragments("Cc1ccccc1", ["[*:1]c1ccccc1"])


def test_an_attachment_point_rdkit_writes_in_brackets_is_a_hole():
    """RDKit writes ``[U][*]`` as it is, the ``*`` in brackets: still the fragment's tail, so that
    the sampler can say the model knows no ``[U]`` (not that the [*] could not be placed)."""
    template = fragment_template("CCCCCC[U][*]")
    assert template.pieces[0].endswith("[U]") and template.pieces[1:] == ("",) and template.holes == ("tail",)


@pytest.mark.parametrize(
    ("group", "suffix"),
    [("[*]C(F)(F)F", "C(F)(F)F"), ("CN(C)[*]", "N(C)C"), ("[*]=O", "=O"), ("[*]S(=O)(=O)C", "S(C)(=O)=O")],
)
def test_a_small_group_is_extended_by_the_molecule_written_before_it(group, suffix):
    # Written first, CF3's text up to its hole, FC(F)(F), reads as a molecule nearly done.
    template = fragment_template(group)
    assert (template.pieces, template.holes, template.suffix) == (("", ""), ("tail",), suffix)
    assert fragment_template("[*]c1ccccc1").pieces == ("c1ccccc1", "")  # six atoms: the motif first


def test_a_fragment_is_kept_with_its_stereocentres():
    fragment = ["[*][C@H](F)Cl"]
    assert keeps_fragments("CC[C@H](F)Cl", fragment)
    assert not keeps_fragments("CC[C@@H](F)Cl", fragment)  # the mirror image
    assert not keeps_fragments("Cl[C@H](F)F", fragment)  # its [*] given an F: no stereocentre left
