"""Where ``polydiff`` sends ``sample`` and ``evaluate``: polydiff's own commands beside LightningCLI's.

``polydiff.__main__`` asks here before it imports the CLI module, which imports Lightning: seconds
of start-up that ``evaluate`` (no model at all) has no use for. (``sample`` loads a checkpoint's
LightningModule, and so imports Lightning itself.)
"""

from __future__ import annotations

from collections.abc import Sequence


def run_plain_command(command_line: Sequence[str]) -> bool:
    """Runs ``polydiff sample`` or ``polydiff evaluate`` where ``command_line`` names one, and
    says so (True); False for LightningCLI's commands, left to the CLI."""
    if command_line[:1] == ["sample"]:
        from polydiff.commands.sample import main
    elif command_line[:1] == ["evaluate"]:
        from polydiff.commands.evaluate import main
    else:
        return False
    main(list(command_line[1:]))
    return True
