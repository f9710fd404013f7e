"""A repeat unit's class read off its backbone linkage, however the unit is framed."""

import pytest

from polydiff.chem.molecules import parse
from polydiff.chem.polymer_classes import polymer_class

# Textbook polymers, each written in two frames: the second cuts the chain somewhere else, often
# through the linkage itself (the class must be read across the frame).
UNITS = {
    "polystyrene": ("polyolefin", "*CC(*)c1ccccc1", "*C(C*)c1ccccc1"),
    "poly(vinyl chloride)": ("polyolefin", "*CC(*)Cl", "*C(Cl)C*"),
    "poly(ethylene oxide)": ("polyether", "*CCO*", "*OCC*"),
    "PEEK": ("polyether", "*Oc1ccc(C(=O)c2ccc(Oc3ccc(*)cc3)cc2)cc1", "*c1ccc(C(=O)c2ccc(Oc3ccc(O*)cc3)cc2)cc1"),
    "poly(caprolactone)": ("polyester", "*OCCCCCC(*)=O", "*CCCCCOC(=O)*"),
    "PET": ("polyester", "*OCCOC(=O)c1ccc(C(*)=O)cc1", "*C(=O)OCCOC(=O)c1ccc(*)cc1"),
    "poly(ethylene carbonate)": ("polyester", "*OCCOC(*)=O", "*CCOC(=O)O*"),
    "nylon-6": ("polyamide", "*NCCCCCC(*)=O", "*CCCCCNC(=O)*"),
    "nylon-6,6": ("polyamide", "*NCCCCCCNC(=O)CCCCC(*)=O", "*C(=O)NCCCCCCNC(=O)CCCC*"),
    "HDI-glycol polyurethane": ("polyurethane", "*OCCOC(=O)NCCCCCCNC(*)=O", "*NCCCCCCNC(=O)OCCOC(*)=O"),
    "PMDA-ODA polyimide (Kapton)": (
        "polyimide",
        "*c1ccc(Oc2ccc(N3C(=O)c4cc5C(=O)N(*)C(=O)c5cc4C3=O)cc2)cc1",
        "*N1C(=O)c2cc3C(=O)N(c4ccc(Oc5ccc(*)cc5)cc4)C(=O)c3cc2C1=O",
    ),
    "an oxazolidone": ("polyoxazolidone", "*CCCCN1CC(CO*)OC1=O", "*OCC1CN(CCCC*)C(=O)O1"),
}


@pytest.mark.parametrize("name", list(UNITS))
def test_the_class_is_the_backbone_linkage_in_every_frame(name):
    expected, *frames = UNITS[name]
    assert [polymer_class(parse(unit)) for unit in frames] == [expected] * len(frames)


def test_a_linkage_that_is_only_a_side_group_or_a_ring_of_the_monomer_does_not_count():
    assert polymer_class(parse("*CC(*)C(=O)OC")) == "polyolefin"  # poly(methyl acrylate): the ester hangs off
    assert polymer_class(parse("*CC(*)N1CCCCC1=O")) == "polyolefin"  # poly(vinyl caprolactam): the lactam is a ring
    assert polymer_class(parse("*CC(*)OC")) == "polyolefin"  # poly(vinyl methyl ether)


def test_units_of_no_class_and_lines_that_are_no_unit():
    assert polymer_class(parse("*SCC*")) is None  # a polysulfide: not one of the classes
    assert polymer_class(parse("CCO")) is None and polymer_class(parse("*CC")) is None
    assert polymer_class(None) is None and polymer_class(parse("*.C*")) is None  # a star with no bond
    assert polymer_class(parse("*=CC*")) is None  # a double bond to a star
