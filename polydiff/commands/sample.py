"""``polydiff sample``: generate sequences from a checkpoint into a file, one per line.

The sampling options are ``SamplingConfig``'s fields, flattened onto the command line
(``--top_p 0.9``, not ``--sampling.top_p``): one declaration serves this command,
``polydiff predict`` and ``DiffusionTask.sample``.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import torch
from jsonargparse import ActionConfigFile

from polydiff.commands import CommandParser, user_errors
from polydiff.sampling.config import SamplingConfig
from polydiff.sampling.generate import Generation, generate
from polydiff.sampling.guidance import parse_condition
from polydiff.tasks.inference import load


def read_prompts(prompt: str | None, prompt_file: str | None) -> list[str] | None:
    """The templates of ``--prompt`` or ``--prompt_file`` (one per non-empty line), or None."""
    if prompt is not None and prompt_file is not None:
        raise ValueError("give --prompt or --prompt_file, not both")
    if prompt_file is None:
        return None if prompt is None else [prompt]
    path = Path(prompt_file)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {path} has no prompts")
    return prompts


def sample(
    ckpt_path: str,
    output: str,
    num_samples: int = 1000,
    config: SamplingConfig | None = None,
    length: int | None = None,
    prompt: str | None = None,
    prompt_file: str | None = None,
    batch_size: int = 256,
    seed: int | None = None,
    device: str | None = None,
    num_threads: int | None = None,
    condition: str | None = None,
    guidance_scale: float = 0.0,
    steering: float | None = None,
    fragments: str | None = None,
) -> Generation:
    """Generate sequences from a polydiff checkpoint into a file, one per line.

    Args:
        ckpt_path: checkpoint written by ``polydiff fit``.
        output: file to write, one sequence per line.
        num_samples: sequences to generate (per prompt, with prompts; grouped by prompt).
        config: how to sample (the command line gives its fields as ``--steps``, ``--top_p``, ...).
        length: tokens per sequence; default: a block-diffusion model ends its sequences itself,
            others draw the length from the training length histogram.
        prompt: a template such as ``c1ccc([MASK][MASK])cc1`` whose [MASK] tokens are filled in.
        prompt_file: many templates, one per line.
        batch_size: sequences denoised together.
        seed: same seed, batch size and device give the same file; default: a fresh seed.
        device: cpu, cuda, cuda:1, ...; default: CUDA when available.
        num_threads: CPU threads for torch; fewer than cores helps when other jobs share them.
        condition: property targets, e.g. ``logp=3,qed=0.8``, or ``class=polyamide`` for a
            polymer model (a checkpoint trained with ``data.conditions``; properties not named are
            left free).
        guidance_scale: classifier-free guidance toward ``condition`` (w; 0 samples the
            conditional model alone; each guided model call counts as two evaluations).
        steering: judge each finished molecule by the checkpoint's prediction of its properties,
            and take back and rewrite the end of one far from ``condition``; this is the target's
            width, in standard deviations of each property over the training molecules (extra
            model calls counted); 0 turns it off; default: 0.25 where it applies (numeric
            targets, a draft-head checkpoint fitted with conditions, speculative decoding).
        fragments: fragments every sample keeps, ``[*]`` marking where the model attaches
            atoms: ``c1ccc([*])cc1[*]`` (decorate a scaffold), ``[*]C(=O)c1ccccc1`` (extend a
            motif), ``[*]C(=O)O.[*]N1CCCC1`` (link two fragments).

    Returns:
        The generation (sequences, NFE, lengths, seed, time).
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    path = Path(output)
    if path.is_dir():  # checked before sampling, not after
        raise ValueError(f"--output {output} is a folder: give the file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    prompts = read_prompts(prompt, prompt_file)
    targets = parse_condition(condition) if condition is not None else None
    task = load(ckpt_path, device)
    model = task.guided(targets, guidance_scale, steering)
    result = generate(model, num_samples, config, length, prompts, batch_size, seed, sys.stderr.isatty(), fragments)
    path.write_text("".join(f"{sequence}\n" for sequence in result.sequences))
    nfe, tokens = result.nfe.float(), result.lengths.float() + task.generates_end  # a block model writes [SEP] too
    print(
        f"polydiff: wrote {len(result.sequences)} sequences to {path} in {result.seconds:.1f} s "
        f"({result.samples_per_s:.1f} samples/s, seed {result.seed})\n"
        f"NFE per sequence: mean {_mean(nfe):.2f}, max {int(nfe.max()) if len(nfe) else 0}\n"
        f"tokens per sequence: mean {_mean(tokens):.2f}"
    )
    return result


def _mean(values: torch.Tensor) -> float:
    return values.mean().item() if len(values) else 0.0


def build_parser() -> CommandParser:
    """The parser of ``polydiff sample``: ``sample``'s arguments and ``SamplingConfig``'s fields."""
    parser = CommandParser(prog="polydiff sample", description=sample.__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_function_arguments(sample, skip={"config"}, as_positional=False)
    parser.add_class_arguments(SamplingConfig, nested_key=None)
    return parser


def main(args: list[str] | None = None) -> None:
    """Runs ``polydiff sample`` on ``args``; user errors end with one line on stderr and exit code 1."""
    with user_errors("polydiff sample"):
        parser = build_parser()
        options = parser.parse_args(args).as_dict()
        options.pop("config", None)
        config = SamplingConfig(**{f.name: options.pop(f.name) for f in fields(SamplingConfig)})
        sample(config=config, **options)
