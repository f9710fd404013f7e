"""``polydiff sample``: generate sequences from a checkpoint into a file, one per line."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from jsonargparse import auto_cli

from polydiff.commands import user_errors
from polydiff.diffusion.sampling import SamplingConfig, Strategy
from polydiff.tasks.generation import Generation, generate
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
    steps: int = SamplingConfig.steps,
    strategy: Strategy = SamplingConfig.strategy,
    temperature: float = SamplingConfig.temperature,
    top_p: float = SamplingConfig.top_p,
    randomness: float = SamplingConfig.randomness,
    length: int | None = None,
    prompt: str | None = None,
    prompt_file: str | None = None,
    batch_size: int = 256,
    seed: int | None = None,
    device: str | None = None,
    cache: bool = SamplingConfig.cache,
    syntax: bool = SamplingConfig.syntax,
    num_threads: int | None = None,
) -> Generation:
    """Generate sequences from a polydiff checkpoint into a file, one per line.

    Args:
        ckpt_path: checkpoint written by ``polydiff fit``.
        output: file to write, one sequence per line.
        num_samples: sequences to generate (per prompt, with prompts; grouped by prompt).
        steps: steps of the reverse process from t = 1 to t = 0.
        strategy: ancestral (the reverse process) or confidence (MaskGIT-style reveal order).
        temperature: divides the logits; below 1 sharpens, 0 takes the most likely token.
        top_p: nucleus sampling threshold (1 keeps every token; default 0.98).
        randomness: Gumbel noise scale of the confidence strategy, annealed with t.
        length: tokens per sequence; default: a block-diffusion model ends its sequences itself,
            others draw the length from the training length histogram.
        prompt: a template such as ``c1ccc([MASK][MASK])cc1`` whose [MASK] tokens are filled in.
        prompt_file: many templates, one per line.
        batch_size: sequences denoised together.
        seed: same seed, batch size and device give the same file; default: a fresh seed.
        device: cpu, cuda, cuda:1, ...; default: CUDA when available.
        cache: re-run the model only on sequences that changed (same output, fewer calls).
        syntax: a SMILES model with one-token blocks writes only well-formed SMILES (balanced
            parentheses and ring closures, atoms within their valence, aromatic rings that can
            be kekulized); false samples the model's own distribution.
        num_threads: CPU threads for torch; fewer than cores helps when other jobs share them.

    Returns:
        The generation (sequences, NFE, lengths, seed, time).
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    config = SamplingConfig(steps, strategy, temperature, top_p, randomness, cache, syntax)
    prompts = read_prompts(prompt, prompt_file)
    task = load(ckpt_path, device)
    result = generate(task, num_samples, config, length, prompts, batch_size, seed, progress=sys.stderr.isatty())
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{sequence}\n" for sequence in result.sequences))
    nfe = result.nfe.float()
    print(
        f"polydiff: wrote {len(result.sequences)} sequences to {path} in {result.seconds:.1f} s "
        f"({result.samples_per_s:.1f} samples/s); NFE per sequence: mean {nfe.mean().item() if len(nfe) else 0:.1f}, "
        f"max {int(nfe.max().item()) if len(nfe) else 0} ({strategy}, {steps} steps, cache {'on' if cache else 'off'}, "
        f"seed {result.seed})"
    )
    return result


def main(args: list[str] | None = None) -> None:
    """Runs ``polydiff sample`` on ``args``; user errors end with one line on stderr and exit code 1."""
    with user_errors("polydiff sample"):
        auto_cli(sample, args=args, as_positional=False, prog="polydiff sample")
