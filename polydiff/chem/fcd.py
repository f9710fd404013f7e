"""Fréchet ChemNet Distance (Preuer et al., 2018) as the MOSES benchmark computes it.

MOSES scores FCD with ``fcd_torch`` 1.0.7. This module runs the same ChemNet weights (the
``ChemNet_v0.13_pretrained.pt`` file that ships inside the ``fcd`` package, loaded from disk,
no network) on the same input encoding, so the numbers match MOSES's:

- every SMILES is one-hot encoded over ChemNet's 35 symbols into 350 positions and the
  one-hot rows are divided by 35;
- a symbol is two characters when its second character is ``r``, ``i`` or ``l`` (Br, Cl,
  Si, but also e.g. Li), characters outside the vocabulary are the unknown ``X``;
- the string ends at its first ``.`` (an end marker is appended), so only the first
  fragment of a multi-fragment SMILES is seen, and it is cut at 349 symbols.

The newer ``fcd`` package tokenizes differently (by regex, no cut at ``.``), which is why
the encoding lives here rather than being borrowed from ``fcd``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

# ChemNet's 35 input symbols, in the order of its one-hot channels.
VOCABULARY = (
    *("C", "N", "O", "H", "F", "Cl", "P", "B", "Br", "S", "I", "Si"),
    *("#", "(", ")", "+", "-", "1", "2", "3", "4", "5", "6", "7", "8", "=", "[", "]", "@"),
    *("c", "n", "o", "s", "X", "."),
)
PAD_LENGTH = 350
SYMBOL_INDEX = {symbol: index for index, symbol in enumerate(VOCABULARY)}
UNKNOWN = SYMBOL_INDEX["X"]
END = SYMBOL_INDEX["."]
SECOND_LETTERS = frozenset("ril")


@dataclass
class FCDStatistics:
    """Mean and covariance of ChemNet activations of a set of molecules."""

    mu: np.ndarray
    sigma: np.ndarray


def encode(smiles: str) -> np.ndarray:
    """ChemNet symbol indices of one SMILES, ending with the end marker, as MOSES's fcd_torch reads them.

    Args:
        smiles: a (canonical) SMILES string.

    Returns:
        int64 indices, at most ``PAD_LENGTH`` long.
    """
    text = smiles + "."
    indices, position = [], 0
    # fcd_torch stops at the first "." (its own end marker) or one short of the padded length.
    while text[position] != "." and len(indices) < PAD_LENGTH - 1:
        width = 2 if text[position + 1] in SECOND_LETTERS else 1
        indices.append(SYMBOL_INDEX.get(text[position : position + width], UNKNOWN))
        position += width
    indices.append(END)
    return np.asarray(indices, dtype=np.int64)


def one_hot_batch(smiles: Sequence[str]) -> torch.Tensor:
    """ChemNet's input for a batch: (batch, 35 symbols, 350 positions), one-hot divided by 35."""
    batch = torch.zeros(len(smiles), PAD_LENGTH, len(VOCABULARY))
    for row, string in enumerate(smiles):
        indices = torch.from_numpy(encode(string))
        batch[row, torch.arange(len(indices)), indices] = 1.0 / len(VOCABULARY)
    return batch.transpose(1, 2)


def load_chemnet() -> torch.nn.Module:
    """The pretrained ChemNet of the ``fcd`` package, in eval mode (read from the installed package)."""
    import fcd  # imported here: it loads torch layers and is only needed for FCD

    return fcd.load_ref_model()


@torch.no_grad()
def chemnet_activations(
    smiles: Sequence[str],
    device: str = "cpu",
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """ChemNet's penultimate activations, one row per SMILES.

    Args:
        smiles: canonical SMILES (MOSES canonicalizes before encoding).
        device: torch device for ChemNet.
        batch_size: SMILES per forward pass.
        progress: called with the number of SMILES done after each batch.

    Returns:
        float32 array of shape (len(smiles), 512).
    """
    model = load_chemnet().to(device)
    outputs = [np.zeros((0, 512), dtype=np.float32)]
    for start in range(0, len(smiles), batch_size):
        chunk = smiles[start : start + batch_size]
        # A copy: the output is a view of the whole LSTM sequence output, which would stay in memory.
        outputs.append(model(one_hot_batch(chunk).to(device)).float().cpu().numpy().copy())
        if progress is not None:
            progress(len(chunk))
    model.to("cpu")
    return np.concatenate(outputs)


def fcd_statistics(activations: np.ndarray, counts: np.ndarray | None = None) -> FCDStatistics:
    """Mean and (unbiased) covariance of activations, each row weighted by how often it occurs.

    Args:
        activations: (n, 512) ChemNet activations, e.g. of the distinct molecules only.
        counts: how many times each row occurs; None for once each.

    Returns:
        The statistics, in float64.
    """
    activations = activations.astype(np.float64)
    weights = np.ones(len(activations)) if counts is None else np.asarray(counts, dtype=np.float64)
    mu = weights @ activations / weights.sum()
    centred = activations - mu
    sigma = (centred * weights[:, None]).T @ centred / (weights.sum() - 1)
    return FCDStatistics(mu, sigma)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: FCDStatistics, b: FCDStatistics) -> float:
    """Fréchet distance between two Gaussians: |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    The trace of the matrix square root is taken through the symmetric S_a^(1/2) S_b S_a^(1/2),
    which has the same eigenvalues as S_a S_b but is well conditioned (scipy's sqrtm of the
    product, as MOSES uses, can turn complex for nearly singular covariances).

    Args:
        a: statistics of one set.
        b: statistics of the other.

    Returns:
        The distance (0 for identical statistics).
    """
    root_a = _psd_sqrt(a.sigma)
    eigenvalues = np.linalg.eigvalsh(root_a @ b.sigma @ root_a)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    diff = a.mu - b.mu
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * trace_sqrt)
