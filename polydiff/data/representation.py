"""The text a model is trained on: SMILES itself, or SELFIES (Krenn et al., 2020).

Users always give and get SMILES. A representation converts a SMILES line into the model's
text before tokenization (``to_model``) and a generated text back into SMILES (``to_smiles``).
SELFIES decodes every token string into a valid molecule, so a SELFIES model cannot produce
an unparsable sample; what it learns is only which molecules are likely.

Polymer attachment points ``*`` have no SELFIES form. They travel as astatine ``[At]``,
which no drug-like or polymer corpus contains, declared monovalent so that a decoded ``[At]``
always ends a chain exactly as ``*`` does. Si, Se and Te get their usual valences too (the
package would allow them 8 bonds), so every string over the bundled vocabulary decodes to a
molecule RDKit accepts.
"""

from __future__ import annotations

import re

from polydiff.types import REPRESENTATIONS

ATTACHMENT_POINT = re.compile(r"\[\*(?::\d+)?\]|\*")
SELFIES_PLACEHOLDER = "[At]"
# Bonds the SELFIES decoder may give these elements: the placeholder bonds once, like "*".
EXTRA_VALENCES = {"At": 1, "Si": 4, "Se": 2, "Te": 2}


class SmilesRepresentation:
    """The model reads and writes SMILES as they are."""

    name = "smiles"
    is_smiles = True  # a SMILES grammar applies to what the model writes (polydiff.sampling.constraints.syntax)

    def to_model(self, smiles: str) -> str | None:
        return smiles

    def to_smiles(self, text: str) -> str:
        return text


class KekuleSmilesRepresentation:
    """The model reads and writes Kekulé SMILES: aromatic rings as alternating single and double
    bonds (``C1=CC=CC=C1``, not ``c1ccccc1``), canonical, from RDKit.

    An aromatic SMILES string is valid only if its lowercase atoms admit a Kekulé structure,
    which a generator often misses (most invalid aromatic samples of a SMILES model fail there,
    docs/quality.md); with explicit bonds there is nothing left to perceive.
    """

    name = "kekule_smiles"
    is_smiles = True

    def to_model(self, smiles: str) -> str | None:
        """The Kekulé SMILES of a line, or None when RDKit cannot parse or kekulize it."""
        from rdkit import Chem

        molecule = Chem.MolFromSmiles(smiles)
        if molecule is None:
            return None
        try:
            Chem.Kekulize(molecule, clearAromaticFlags=True)
        except Chem.KekulizeException:
            return None
        return Chem.MolToSmiles(molecule, kekuleSmiles=True)

    def to_smiles(self, text: str) -> str:
        return text


class SelfiesRepresentation:
    """The model reads and writes SELFIES; conversion uses the ``selfies`` package."""

    name = "selfies"
    is_smiles = False

    def __init__(self) -> None:
        import selfies

        # Its functions, not the module itself: a task holding a module object could not be
        # deep-copied (the EMA callback copies the whole task).
        self._encoder, self._decoder = selfies.encoder, selfies.decoder
        self._errors = (selfies.EncoderError, selfies.DecoderError)
        constraints = selfies.get_semantic_constraints()
        if any(constraints.get(element) != bonds for element, bonds in EXTRA_VALENCES.items()):
            selfies.set_semantic_constraints({**constraints, **EXTRA_VALENCES})

    def to_model(self, smiles: str) -> str | None:
        """The SELFIES of a SMILES line, or None when the line does not parse."""
        try:
            return self._encoder(ATTACHMENT_POINT.sub(SELFIES_PLACEHOLDER, smiles))
        except self._errors[0]:
            return None

    def to_smiles(self, text: str) -> str:
        """The SMILES of a SELFIES string ("" when nothing decodes), placeholders back to ``*``."""
        try:
            smiles = self._decoder(text)
        except self._errors[1]:
            return ""
        return (smiles or "").replace(SELFIES_PLACEHOLDER, "*")


Representation = SmilesRepresentation | KekuleSmilesRepresentation | SelfiesRepresentation


def get_representation(name: str) -> Representation:
    """The representation called ``name`` (``smiles``, ``kekule_smiles`` or ``selfies``)."""
    if name == "smiles":
        return SmilesRepresentation()
    if name == "kekule_smiles":
        return KekuleSmilesRepresentation()
    if name == "selfies":
        return SelfiesRepresentation()
    raise ValueError(f"unknown representation {name!r}; choose one of {REPRESENTATIONS}")
