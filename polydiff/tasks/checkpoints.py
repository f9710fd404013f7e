"""Checking a checkpoint file before anything is built from it: one clear error for a bad file."""

from __future__ import annotations

from pathlib import Path

import torch


def check_checkpoint(path: str | Path) -> None:
    """Checks that a file is a polydiff checkpoint, loading it the safe way (``weights_only``: tensors and
    plain containers only, no code run), memory-mapped so that even a large one costs little.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if it is truncated, corrupt, not a PyTorch file, needs code to load, or is not a
            DiffusionTask checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # truncated zip, pickle errors, disallowed globals: all one message
        raise ValueError(f"{path} is not a readable polydiff checkpoint ({describe_error(error)})") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(key.startswith("model.bert.") for key in state):
        raise ValueError(f"{path} is a PyTorch file but not a polydiff checkpoint (no DiffusionTask weights)")


def describe_error(error: Exception) -> str:
    """An exception as one short line: its type and the first line of its message."""
    reason = (str(error).strip().splitlines() or [""])[0]  # the rest is advice for torch.load callers
    reason = reason if len(reason) <= 100 else reason[:97] + "..."
    return f"{type(error).__name__}: {reason}"
