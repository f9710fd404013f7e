"""``polydiff sample``: generate sequences from a checkpoint into a file, one per line.

The generation options are ``DiffusionTask.sample``'s (``--num_samples``, ``--length``, ...), and
the sampling options ``SamplingConfig``'s fields, flattened onto the command line (``--top_p 0.9``,
not ``--sampling.top_p``): one declaration of each serves this command and the Python API
(``polydiff predict`` takes ``SamplingConfig`` as ``--model.sampling``).
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ActionConfigFile
from jsonargparse.typing import PositiveInt

from polydiff.chem.molecules import is_polymer, parse, quiet_rdkit
from polydiff.commands import CommandParser, one_line_warnings, user_errors
from polydiff.sampling.config import SamplingConfig
from polydiff.sampling.generate import Generation
from polydiff.sampling.guidance import parse_condition
from polydiff.tasks.diffusion_task import DiffusionTask
from polydiff.tasks.inference import load
from polydiff.utils.files import existing_file

# The command reads a prompt and the condition as text (the template [MASK] would read as a YAML
# list, and {logp: 3} is a clumsy way to write a target), and shows progress on a terminal.
GIVEN_BY_THE_COMMAND = {"config", "progress", "prompt", "condition"}


def read_prompts(prompt: str | None, prompt_file: str | None) -> list[str] | None:
    """The templates of ``--prompt`` or ``--prompt_file`` (one per non-empty line), or None."""
    if prompt is not None and prompt_file is not None:
        raise ValueError("give --prompt or --prompt_file, not both")
    if prompt_file is None:
        return None if prompt is None else [prompt]
    path = existing_file(prompt_file, "prompt file")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {path} has no prompts")
    return prompts


def write_samples(
    ckpt_path: str,
    output: str,
    *,
    prompt: str | None = None,
    prompt_file: str | None = None,
    device: str | None = None,
    num_threads: PositiveInt | None = None,
    condition: str | None = None,
    **generation: Any,
) -> Generation:
    """Generate sequences from a polydiff checkpoint into a file, one per line.

    Args:
        ckpt_path: checkpoint written by ``polydiff fit``.
        output: file to write, one sequence per line.
        prompt: a template such as ``c1ccc([MASK][MASK])cc1`` whose [MASK] tokens are filled in.
        prompt_file: many templates, one per line.
        device: cpu, cuda, cuda:1, ...; default: CUDA when available.
        num_threads: CPU threads for torch; fewer than cores helps when other jobs share them.
        condition: property targets, e.g. ``logp=3,qed=0.8``, or ``class=polyamide`` for a
            polymer model (a checkpoint trained with ``data.conditions``; properties not named are
            left free).
        generation: the other options of ``DiffusionTask.sample`` (``num_samples``, ``config``,
            ``length``, ``batch_size``, ``seed``, ``guidance_scale``, ``steering``, ``fragments``).

    Returns:
        The generation (sequences, NFE, lengths, seed, time).
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    path = Path(output)
    if path.is_dir():  # checked before sampling, not after
        raise ValueError(f"--output {output} is a folder: give the file to write")
    blocking = next((folder for folder in path.parents if folder.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ValueError(f"--output {output}: {blocking} is a file, so no folder can hold the output there")
    path.parent.mkdir(parents=True, exist_ok=True)
    prompts = read_prompts(prompt, prompt_file)
    targets = parse_condition(condition) if condition is not None else None
    task = load(ckpt_path, device)
    result = task.sample(prompt=prompts, condition=targets, progress=sys.stderr.isatty(), **generation)
    path.write_text("".join(f"{sequence}\n" for sequence in result))
    nfe, tokens = result.nfe.float(), result.lengths.float() + task.generates_end  # a block model writes [SEP] too
    print(
        f"polydiff: wrote {len(result)} sequences to {path} in {result.seconds:.1f} s "
        f"({result.samples_per_s:.1f} samples/s, seed {result.seed})\n"
        f"NFE per sequence: mean {_mean(nfe):.2f}, max {int(nfe.max()) if len(nfe) else 0}\n"
        f"tokens per sequence: mean {_mean(tokens):.2f}\n"
        f"{_validity(result, task.kind == 'polymer')}"
    )
    return result


def _validity(sequences: list[str], polymer: bool) -> str:
    """How many of ``sequences`` RDKit reads as written (and, for a polymer model, are repeat units),
    so that a model that writes junk says so at once; ``polydiff evaluate`` measures the rest."""
    quiet_rdkit()  # unconstrained samples (--syntax false, --length, --prompt) fail to parse, each loudly
    valid = sum(is_polymer(mol) if polymer else mol is not None for mol in map(parse, sequences))
    kind = "polymer-valid (two *)" if polymer else "valid"
    return f"{kind}: {valid} of {len(sequences)}, as RDKit reads them as written"


def _mean(values: torch.Tensor) -> float:
    return values.mean().item() if len(values) else 0.0


def build_parser() -> CommandParser:
    """The parser of ``polydiff sample``: its own arguments, ``DiffusionTask.sample``'s and
    ``SamplingConfig``'s fields."""
    parser = CommandParser(prog="polydiff sample", description=write_samples.__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_function_arguments(write_samples, as_positional=False)
    # num_samples, length, seed, ... are declared once, by the method.
    parser.add_method_arguments(DiffusionTask, "sample", skip=GIVEN_BY_THE_COMMAND, as_positional=False)
    parser.add_class_arguments(SamplingConfig, nested_key=None)
    return parser


def main(args: list[str] | None = None) -> None:
    """Runs ``polydiff sample`` on ``args``; user errors end with one line on stderr and exit code 1."""
    with user_errors("polydiff sample"), one_line_warnings("polydiff sample"):
        parser = build_parser()
        options = parser.parse_args(args).as_dict()
        options.pop("config", None)
        # The sampling options given, by name or in a -c file: each must matter, even at its default.
        given = parser.parse_args(args, defaults=False).as_dict()
        config = SamplingConfig.asked(given, **{f.name: options.pop(f.name) for f in fields(SamplingConfig)})
        write_samples(config=config, **options)
