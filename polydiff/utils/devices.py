"""The torch device a command runs on, checked before any work starts."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device, None meaning CUDA where there is a GPU and the CPU otherwise.

    Raises:
        ValueError: if ``device`` names no device torch knows, or a GPU this machine does not have.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1)") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device} is not available: no CUDA GPU found (ask for device cpu instead)")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {device} is not available: this machine has {count} CUDA GPU(s)")
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {device} is not available: no Apple GPU (MPS) found (ask for device cpu instead)")
    elif resolved.type != "cpu":
        raise ValueError(f"device {device} is not supported: polydiff runs on cpu, cuda or mps")
    else:  # one CPU device, whatever its index: torch.load's map_location cannot restore "cpu:0"
        resolved = torch.device("cpu")
    return resolved
