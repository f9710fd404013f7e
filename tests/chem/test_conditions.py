"""The properties a model is conditioned on, computed with RDKit."""

import math

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import Crippen, Descriptors

from polydiff.chem.conditions import property_values


def test_properties_are_rdkits_and_nan_where_it_fails_or_where_not_wanted():
    values = property_values(["CCO", "not smiles", "c1ccccc1"], ["logp", "mw"], np.array([[1, 1], [1, 1], [0, 1]]))
    ethanol = Chem.MolFromSmiles("CCO")
    assert values[0].tolist() == pytest.approx([Crippen.MolLogP(ethanol), Descriptors.MolWt(ethanol)])
    assert np.isnan(values[1]).all()
    assert math.isnan(values[2, 0]) and values[2, 1] == pytest.approx(78.114, abs=1e-3)


def test_an_unknown_property_is_refused():
    with pytest.raises(ValueError, match="unknown property 'solubility'"):
        property_values(["CCO"], ["solubility"])
