"""Checking a checkpoint file before anything is built from it, and reading older ones.

A bad file is one clear error, never a traceback from deep inside torch or Lightning. A checkpoint
written before an option was renamed or removed, or before an option that changed nothing was
refused, is brought up to date in memory (``migrate_hyperparameters``), so it loads as it always
did; the file on disk is not touched.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from polydiff.tasks.lr_schedule import COSINE_ONLY_OPTIONS, LRScheduleConfig

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # torch's messages set bold text
# Options renamed since checkpoints were first written: old name -> new name.
RENAMED_OPTIONS = {"sample_every_n_epochs": "sample_every_n_validations"}
# The bundled SMILES tokenizer had 1,467 tokens before it kept only the common ones; a SMILES
# checkpoint with that many embeddings was trained on what is now ``smiles_full``.
FULL_SMILES_VOCABULARY_SIZE = 1467
WORD_EMBEDDINGS = "model.bert.embeddings.word_embeddings.weight"


class NeedsCodeError(ValueError):
    """A checkpoint the weights-only load refused: it holds objects whose loading runs code."""

    def __init__(self, reason: str, how: str | None = None) -> None:
        super().__init__(reason if how is None else f"{reason}; a file you trust loads with {how}")
        self.reason = reason

    def advising(self, how: str) -> NeedsCodeError:
        """The same refusal, saying how to load a file one trusts (``how``: the option as the caller spells it)."""
        return NeedsCodeError(self.reason, how)


def check_checkpoint(path: str | Path, weights_only: bool = True) -> dict[str, Any]:
    """Checks that a file is a polydiff checkpoint, loading it the safe way (``weights_only``: tensors and
    plain containers only, no code run), memory-mapped so that even a large one costs little.
    ``weights_only=False`` runs what the file holds: only for a file from a source one trusts.

    Returns:
        The checkpoint (its tensors memory-mapped).

    Raises:
        FileNotFoundError: if there is no such file.
        NeedsCodeError: if it needs code to load (a ValueError).
        ValueError: if it is truncated, corrupt, not a PyTorch file, or is not a DiffusionTask checkpoint.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give the checkpoint file in it (e.g. checkpoints/best.ckpt)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except Exception as error:  # truncated zip, pickle errors, disallowed globals: all one message
        refused = NeedsCodeError if weights_only and isinstance(error, pickle.UnpicklingError) else ValueError
        raise refused(f"{path} is not a readable polydiff checkpoint ({error_summary(error)})") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(key.startswith("model.bert.") for key in state):
        raise ValueError(f"{path} is a PyTorch file but not a polydiff checkpoint (no DiffusionTask weights)")
    return checkpoint


def migrate_hyperparameters(hparams: dict[str, Any], state_dict: dict[str, Any] | None = None) -> bool:
    """Rewrites, in place, a checkpoint's hyperparameters written under earlier option names or
    defaults (``state_dict``, the checkpoint's weights, tells which bundled tokenizer it used).

    Returns:
        Whether anything changed.

    Raises:
        ValueError: if the checkpoint used an option that no longer exists with a value that mattered.
    """
    changed = False
    for old, new in RENAMED_OPTIONS.items():
        if old in hparams:
            hparams[new] = hparams.pop(old)
            changed = True
    diffusion = hparams.get("diffusion_config")
    if isinstance(diffusion, dict) and "order_skew" in diffusion:
        if diffusion.pop("order_skew"):
            raise ValueError("this checkpoint was trained with order_skew, which polydiff no longer supports")
        changed = True
    # A model with a causal context from before draft heads drafted with the encoder's own windows.
    options = diffusion if isinstance(diffusion, dict) else getattr(diffusion, "__dict__", {})
    if options.get("causal_context") and "drafter" not in options:
        options["drafter"] = "windows"
        changed = True
    # Options saved where they changed nothing, which polydiff now refuses there: set to what they
    # were in effect (the cosine decay's to their defaults; the validation sample count dropped).
    schedule = hparams.get("lr_schedule")
    if isinstance(schedule, dict) and schedule.get("decay") == "constant":
        for name in COSINE_ONLY_OPTIONS:
            if schedule.get(name, getattr(LRScheduleConfig, name)) != getattr(LRScheduleConfig, name):
                schedule[name] = getattr(LRScheduleConfig, name)
                changed = True
    if hparams.get("sample_every_n_validations") == 0 and hparams.pop("val_num_samples", None) is not None:
        changed = True
    embeddings = (state_dict or {}).get(WORD_EMBEDDINGS)
    if (
        hparams.get("tokenizer_name") is None
        and hparams.get("representation", "smiles") in ("smiles", "kekule_smiles")
        and embeddings is not None
        and embeddings.shape[0] == FULL_SMILES_VOCABULARY_SIZE
    ):
        hparams["tokenizer_name"] = "smiles_full"
        changed = True
    return changed


def migrated_checkpoint(checkpoint: dict[str, Any]) -> io.BytesIO | None:
    """The checkpoint with up-to-date hyperparameters, as a file in memory; None when it needs no change."""
    if not migrate_hyperparameters(checkpoint.get("hyper_parameters") or {}, checkpoint.get("state_dict")):
        return None
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return buffer


def error_summary(error: Exception) -> str:
    """An exception as one short line: its type and the first line of its message."""
    reason = (str(error).strip().splitlines() or [""])[0]  # the rest is advice for torch.load callers
    reason = ANSI_ESCAPE.sub("", reason)
    reason = reason.split(". ")[0].rstrip(".")  # its first sentence: torch's next ones advise torch.load callers
    reason = reason if len(reason) <= 100 else reason[:97] + "..."
    return f"{type(error).__name__}: {reason}"


# The parts of torch's ``load_state_dict`` report: the keys it lists, and each weight of another shape.
KEY_LISTINGS = {
    "missing": r"Missing key\(s\) in state_dict: (.*?)\.\s*$",
    "unexpected": r"Unexpected key\(s\) in state_dict: (.*?)\.\s*$",
}
SHAPE_MISMATCH = (
    r"size mismatch for ([^:]+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from checkpoint, "
    r"the shape in current model is torch\.Size\((\[[^\]]*\])\)"
)


class WeightsMismatchError(ValueError):
    """A checkpoint's weights do not fit the model built for them (another size, vocabulary or head)."""


def weights_mismatch(error: RuntimeError) -> str | None:
    """torch's report of weights that do not fit a model (``load_state_dict``), as one line: how many
    are missing, unexpected or of another shape, with the first of each; None for another error."""
    message = str(error)
    if not message.startswith("Error(s) in loading state_dict"):
        return None
    parts = []
    for label, listing in KEY_LISTINGS.items():
        found = re.search(listing, message, re.MULTILINE)
        if found:
            keys = re.findall(r'"([^"]+)"', found.group(1))
            parts.append(f"{len(keys)} {label} (first: {keys[0]})" if keys else label)
    shapes = re.findall(SHAPE_MISMATCH, message)
    if shapes:
        name, saved, here = shapes[0]
        parts.append(f"{len(shapes)} of another shape (first: {name}, {saved} in the file, {here} here)")
    return "its weights do not fit this model: " + ("; ".join(parts) or message.splitlines()[0])
