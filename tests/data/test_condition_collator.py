"""The conditions each training batch carries: RDKit's properties, dropped at random for guidance."""

import math

import pytest
import torch

from polydiff.data.batching import ConditionCollator, MoleculeCollator
from polydiff.types import POLYMER_CLASSES

ROWS = 2_000
# Three binomial standard deviations of a share estimated from ROWS rows (p(1 - p) <= 1/4).
TOLERANCE = 3 * math.sqrt(0.25 / ROWS)


def collator(names, dropout):
    return ConditionCollator(MoleculeCollator("smiles", 64), names, "smiles", "smiles", dropout)


def test_without_dropout_every_property_of_every_sequence_is_given():
    batch = collator(["logp", "mw"], 0.0)(["CCO", "c1ccccc1"])
    assert not batch["conditions"].isnan().any()
    assert batch["conditions"][1, 1].item() == pytest.approx(78.114, abs=1e-3)


def test_dropout_leaves_a_share_unconditioned_and_the_rest_a_nonempty_subset():
    torch.manual_seed(0)
    known = ~collator(["logp", "mw"], 0.2)(["CCO"] * ROWS)["conditions"].isnan()
    assert known.any(-1).float().mean().item() == pytest.approx(0.8, abs=TOLERANCE)
    # Each of two properties: kept by its coin (1/2), or drawn when both coins said no (1/4 x 1/2).
    assert known.float().mean(0).tolist() == pytest.approx([0.8 * 5 / 8] * 2, abs=TOLERANCE)


def test_a_lone_class_condition_is_one_hot_and_seen_whenever_conditions_are():
    torch.manual_seed(0)
    values = collator(["class"], 0.2)(["*NCCCCCC(*)=O"] * ROWS)["conditions"]
    known = ~values.isnan().all(-1)
    assert known.float().mean().item() == pytest.approx(0.8, abs=TOLERANCE)
    assert (values[known].argmax(-1) == POLYMER_CLASSES.index("polyamide")).all()
    assert (values[known].sum(-1) == 1).all()


def test_the_sequences_given_no_condition_carry_every_property_for_the_property_head():
    torch.manual_seed(0)
    batch = collator(["logp", "mw"], 0.5)(["CCO"] * 200)
    unconditioned = batch["conditions"].isnan().all(-1)
    assert 0 < unconditioned.sum() < 200
    assert not batch["properties"][unconditioned].isnan().any()
    assert batch["properties"][~unconditioned].isnan().all()
    weights = batch["properties"][unconditioned, 1]
    assert weights.tolist() == pytest.approx([46.069] * len(weights), abs=1e-3)  # ethanol's g/mol


def test_the_data_module_leaves_a_share_unconditioned_or_refuses_in_one_line(smiles_files):
    from polydiff.data.datamodule import MoleculeDataModule

    files = (str(smiles_files["train"]), str(smiles_files["val"]))
    assert MoleculeDataModule(*files, conditions=["logp"]).condition_dropout == 0.2
    assert MoleculeDataModule(*files, conditions=["logp"], condition_dropout=0.5).condition_dropout == 0.5
    # Given without conditions, even at the value it takes with them, it would do nothing.
    with pytest.raises(ValueError, match=r"drops conditions: it needs data\.conditions"):
        MoleculeDataModule(*files, condition_dropout=0.2)
    # None unconditioned: neither the unconditional model nor the property head would learn.
    for dropout in (0.0, 1.0):
        with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
            MoleculeDataModule(*files, conditions=["logp"], condition_dropout=dropout)
