"""Where ``polydiff`` sends ``sample``, ``evaluate`` and ``--help``: polydiff's own commands beside LightningCLI's.

``polydiff.__main__`` asks here before it imports the CLI module, which imports Lightning: seconds
of start-up that ``evaluate`` (no model at all) has no use for. (``sample`` loads a checkpoint's
LightningModule, and so imports Lightning itself.)
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence

DESCRIPTION = "Masked diffusion models for molecules and polymers."
# Each command in polydiff's words: the overview's (``polydiff --help``), and LightningCLI's list of
# its own (whose words describe the Trainer's methods, the first line cut mid-sentence).
COMMAND_HELP = {
    "fit": "Train a model (-c recipes/base.yaml), or go on training one (--ckpt_path last).",
    "validate": "Score a checkpoint (--ckpt_path) on the validation set: val/nll and the rest.",
    "test": "Score a checkpoint (--ckpt_path) on the test set (data.test_file).",
    "predict": "Sample from a checkpoint through Lightning's loop; `polydiff sample` is the usual way.",
    "sample": "Generate molecules or polymer units from a checkpoint into a file (--ckpt_path, --output).",
    "evaluate": "Score a file of samples: validity, uniqueness, novelty, FCD and MOSES's other metrics.",
}


def overview() -> str:
    """What ``polydiff --help`` prints: the commands, each in a line, without importing Lightning
    (seconds), which each command's own ``--help`` needs for its options."""
    width = min(shutil.get_terminal_size().columns, 100)
    name_width = max(map(len, COMMAND_HELP)) + 4
    lines = ["usage: polydiff COMMAND [options]", "", DESCRIPTION, "", "commands:"]
    for name, text in COMMAND_HELP.items():
        wrapped = textwrap.wrap(text, max(width - name_width, 30))
        lines.append(f"  {name:<{name_width - 2}}{wrapped[0]}")
        lines += [" " * name_width + rest for rest in wrapped[1:]]
    lines += ["", "polydiff COMMAND --help lists a command's options; polydiff --version prints the version."]
    return "\n".join(lines)


def run_plain_command(command_line: Sequence[str]) -> bool:
    """Runs ``polydiff sample`` or ``polydiff evaluate`` where ``command_line`` names one, or
    prints the overview for ``polydiff --help``, and says so (True); False for LightningCLI's
    commands, left to the CLI."""
    if list(command_line) in (["-h"], ["--help"]):
        print(overview())
        return True
    if command_line[:1] == ["sample"]:
        from polydiff.commands.sample import main
    elif command_line[:1] == ["evaluate"]:
        from polydiff.commands.evaluate import main
    else:
        return False
    main(list(command_line[1:]))
    return True
