"""``polydiff sample``: generate sequences from a checkpoint into a file, one per line.

The generation options are ``DiffusionTask.sample``'s (``--num_samples``, ``--length``, ...), and
the sampling options ``SamplingConfig``'s fields, flattened onto the command line (``--top_p 0.9``,
not ``--sampling.top_p``): one declaration of each serves this command and the Python API
(``polydiff predict`` takes ``SamplingConfig`` as ``--model.sampling``).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TextIO

import torch
from jsonargparse import ActionConfigFile
from jsonargparse.typing import PositiveInt

from polydiff.chem.fragments import keeps_fragments
from polydiff.chem.molecules import is_polymer, parse, quiet_rdkit
from polydiff.commands import CommandParser, ends_on_sigterm, one_line_warnings, user_errors
from polydiff.sampling.config import SamplingConfig
from polydiff.sampling.generate import Generation
from polydiff.sampling.guidance import parse_condition
from polydiff.tasks.checkpoints import NeedsCodeError
from polydiff.tasks.diffusion_task import DiffusionTask
from polydiff.tasks.inference import load
from polydiff.utils.files import check_samples_name, existing_file, open_samples, writing_path

# The command reads a prompt and the condition as text (the template [MASK] would read as a YAML
# list, and {logp: 3} is a clumsy way to write a target), and shows progress on a terminal.
GIVEN_BY_THE_COMMAND = {"config", "progress", "prompt", "condition"}
# The options the command hands to ``DiffusionTask.sample`` as they are.
GENERATION_OPTIONS = set(inspect.signature(DiffusionTask.sample).parameters) - GIVEN_BY_THE_COMMAND - {"self"}


def read_prompts(prompt: str | None, prompt_file: str | None) -> list[str] | None:
    """The templates of ``--prompt`` or ``--prompt_file`` (one per line; blank lines and comments,
    lines that start with ``#``, which no SMILES does, are skipped), or None."""
    if prompt is not None and prompt_file is not None:
        raise ValueError("give --prompt or --prompt_file, not both")
    if prompt_file is None:
        return None if prompt is None else [prompt]
    path = existing_file(prompt_file, "prompt file")
    lines = (line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines())
    prompts = [line for line in lines if line and not line.startswith("#")]
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
    weights_only: bool = True,
    generation: Mapping[str, Any] | None = None,
) -> Generation:
    """Generate sequences from a polydiff checkpoint into a file, one per line.

    Args:
        ckpt_path: checkpoint written by ``polydiff fit``.
        output: file to write, one sequence per line (``-``: standard output); it is replaced
            only once every sample is drawn. A ``.gz`` name is gzip-compressed, and a ``.csv``
            one headed ``SMILES`` (``PSMILES``), as ``polydiff evaluate`` reads them.
        prompt: a template such as ``c1ccccc1C(=O)N[MASK][MASK][MASK][MASK]`` whose [MASK] tokens
            are filled in (under the SMILES rules where the template fixes only a start; to keep
            a ring and fill its substituents, ``--fragments "c1ccc([*])cc1"``).
        prompt_file: many templates, one per line (``#`` starts a comment line).
        device: cpu, cuda, cuda:1, ...; default: CUDA when available.
        num_threads: CPU threads for torch; fewer than cores helps when other jobs share them.
        condition: property targets, e.g. ``logp=3,qed=0.8``, or ``class=polyamide`` for a
            polymer model (a checkpoint trained with ``data.conditions``; properties not named are
            left free).
        weights_only: read the checkpoint's tensors and plain data only; false also runs the code
            a file holds, only for a file one trusts (Lightning 2.6 or later).
        generation: the other options of ``DiffusionTask.sample`` (``num_samples``, ``config``,
            ``length``, ``batch_size``, ``seed``, ``guidance_scale``, ``steering``, ``fragments``).

    Returns:
        The generation (sequences, NFE, lengths, seed, time).
    """
    generation = dict(generation or {})
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    if ckpt_path in ("last", "best") and not Path(ckpt_path).exists():
        raise FileNotFoundError(
            f"--ckpt_path {ckpt_path}: polydiff sample takes the checkpoint file, e.g. "
            f"runs/base/lightning_logs/version_0/checkpoints/{ckpt_path}.ckpt (fit, validate, test and predict find "
            f"the newest {ckpt_path}.ckpt under their --trainer.default_root_dir)"
        )
    to_stdout = output == "-"
    path = Path(output)
    if not to_stdout:
        _check_output(path, Path(ckpt_path))
    prompts = read_prompts(prompt, prompt_file)
    targets = parse_condition(condition) if condition is not None else None
    try:
        task = load(ckpt_path, device, weights_only)
    except NeedsCodeError as error:
        raise error.advising("--weights_only false") from None
    polymer = task.kind == "polymer"
    with contextlib.nullcontext(sys.stdout) if to_stdout else _replaced_when_done(path, polymer) as file:
        # Opened before sampling, so that an output that cannot be written fails before the work.
        result = task.sample(prompt=prompts, condition=targets, progress=sys.stderr.isatty(), **generation)
        file.write("".join(f"{sequence}\n" for sequence in result))
    # A block model that ends its own samples writes [SEP] too; a length or template fixes it instead.
    writes_end = task.generates_end and generation.get("length") is None and prompts is None
    nfe, tokens = result.nfe.float(), result.lengths.float() + writes_end
    # The summary goes to stderr, with the progress bar: --output - leaves stdout to the samples.
    count = f"{len(result)} sequence{'' if len(result) == 1 else 's'}"
    print(
        f"polydiff: wrote {count} to {'stdout' if to_stdout else path} in {result.seconds:.1f} s "
        f"({result.samples_per_s:.1f} samples/s, seed {result.seed})\n"
        f"NFE per sequence: mean {_mean(nfe):.2f}, max {int(nfe.max()) if len(nfe) else 0}\n"
        f"tokens per sequence: mean {_mean(tokens):.2f}\n"
        f"{_validity(result, polymer)}",
        file=sys.stderr,
    )
    if generation.get("fragments"):
        kept = sum(keeps_fragments(sample, generation["fragments"].split(".")) for sample in result)
        print(f"kept the fragments, stereocentres included: {kept} of {len(result)}", file=sys.stderr)
    return result


def _check_output(path: Path, checkpoint: Path) -> None:
    """Refuses an output that is a folder, is named as no samples file is, lies under a file, or is
    the checkpoint itself."""
    if path.is_dir():
        raise ValueError(f"--output {path} is a folder: give the file to write")
    blocking = next((folder for folder in path.parents if folder.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ValueError(f"--output {path}: {blocking} is a file, so no folder can hold the output there")
    if path.exists() and checkpoint.exists() and path.samefile(checkpoint):
        raise ValueError(f"--output {path} is the checkpoint: writing the samples there would destroy it")
    check_samples_name(path, "--output")


@contextlib.contextmanager
def _replaced_when_done(path: Path, polymer: bool) -> Iterator[TextIO]:
    """A new file next to ``path`` (its folders made), which replaces ``path`` once the block ends
    without an error and is removed if it does not: an interrupted run leaves ``path`` as it was.
    Written as ``path``'s name says (``utils.files.open_samples``: ``.gz``, ``.csv``); a device or a
    pipe (``/dev/null``) as it is."""
    partial = writing_path(path)
    if partial == path:
        with open_samples(path, path, polymer) as file:
            yield file
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = open_samples(partial, path, polymer)
    except OSError as error:  # named as given: the hidden file's name would puzzle
        raise OSError(f"--output {path}: cannot write there ({error.strerror})") from error
    try:
        with file:
            yield file
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)


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
    parser.add_function_arguments(write_samples, as_positional=False, skip={"generation"})
    # num_samples, length, seed, ... are declared once, by the method.
    parser.add_method_arguments(DiffusionTask, "sample", skip=GIVEN_BY_THE_COMMAND, as_positional=False)
    parser.add_class_arguments(SamplingConfig, nested_key=None)
    return parser


def main(args: list[str] | None = None) -> None:
    """Runs ``polydiff sample`` on ``args``; user errors end with one line on stderr and exit code 1."""
    with user_errors("polydiff sample"), ends_on_sigterm("polydiff sample"), one_line_warnings("polydiff sample"):
        parser = build_parser()
        options = parser.parse_args(args).as_dict()
        options.pop("config", None)
        # The sampling options named on the command line must matter, even at their defaults; a -c
        # file's count by value (``--print_config`` writes every one at its default).
        named = {arg[2:].partition("=")[0] for arg in (sys.argv[1:] if args is None else args) if arg[:2] == "--"}
        config = SamplingConfig.asked(named, **{f.name: options.pop(f.name) for f in fields(SamplingConfig)})
        generation = {name: options.pop(name) for name in GENERATION_OPTIONS} | {"config": config}
        write_samples(**options, generation=generation)
