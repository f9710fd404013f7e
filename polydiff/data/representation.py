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
from typing import Literal

RepresentationName = Literal["smiles", "selfies"]
REPRESENTATIONS: tuple[str, ...] = ("smiles", "selfies")

ATTACHMENT_POINT = re.compile(r"\[\*(?::\d+)?\]|\*")
SELFIES_PLACEHOLDER = "[At]"
# Bonds the SELFIES decoder may give these elements: the placeholder bonds once, like "*".
EXTRA_VALENCES = {"At": 1, "Si": 4, "Se": 2, "Te": 2}


class SmilesRepresentation:
    """The model reads and writes SMILES as they are."""

    name = "smiles"

    def to_model(self, smiles: str) -> str | None:
        return smiles

    def to_smiles(self, text: str) -> str:
        return text


class SelfiesRepresentation:
    """The model reads and writes SELFIES; conversion uses the ``selfies`` package."""

    name = "selfies"

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


Representation = SmilesRepresentation | SelfiesRepresentation


def get_representation(name: str) -> Representation:
    """The representation called ``name`` (``smiles`` or ``selfies``)."""
    if name == "smiles":
        return SmilesRepresentation()
    if name == "selfies":
        return SelfiesRepresentation()
    raise ValueError(f"unknown representation {name!r}; choose one of {REPRESENTATIONS}")
