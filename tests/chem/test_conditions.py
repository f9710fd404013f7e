"""The properties a model is conditioned on, computed with RDKit."""

import math

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import Crippen, Descriptors

from polydiff.chem.conditions import categorical_columns, condition_columns, property_values
from polydiff.types import POLYMER_CLASSES


def test_properties_are_rdkits_and_nan_where_it_fails_or_where_not_wanted():
    values = property_values(["CCO", "not smiles", "c1ccccc1"], ["logp", "mw"], np.array([[1, 1], [1, 1], [0, 1]]))
    ethanol = Chem.MolFromSmiles("CCO")
    assert values[0].tolist() == pytest.approx([Crippen.MolLogP(ethanol), Descriptors.MolWt(ethanol)])
    assert np.isnan(values[1]).all()
    assert math.isnan(values[2, 0]) and values[2, 1] == pytest.approx(78.114, abs=1e-3)


def test_an_unknown_property_is_refused():
    with pytest.raises(ValueError, match="unknown property 'solubility'"):
        property_values(["CCO"], ["solubility"])


def test_the_class_is_one_hot_over_its_columns_and_nan_where_a_unit_has_none():
    names = ["logp", "class"]
    columns = condition_columns(names)
    assert columns[0] == "logp" and columns[1:] == [f"class={c}" for c in POLYMER_CLASSES]
    assert categorical_columns(names).tolist() == [False] + [True] * len(POLYMER_CLASSES)
    values = property_values(["*NCCCCCC(*)=O", "*SCC*", "*CCO*"], names, np.array([[0, 1], [1, 1], [1, 0]]))
    nylon = values[0, 1:]
    assert nylon.sum() == 1 and nylon[POLYMER_CLASSES.index("polyamide")] == 1 and math.isnan(values[0, 0])
    assert np.isnan(values[1, 1:]).all() and not math.isnan(values[1, 0])  # a polysulfide has no class
    assert np.isnan(values[2, 1:]).all()  # not wanted: not computed
