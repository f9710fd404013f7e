"""Generation from a trained DiffusionTask: lengths, templates, batches, decoding.

Each sequence is [CLS] + L tokens + [SEP] + pads. L is drawn from the training length histogram
kept in the checkpoint, unless a fixed ``length`` or a template (``prompts``) is given. A
template is a string in the model's representation (SMILES, or SELFIES symbols) whose
``[MASK]`` tokens are generated while every other token stays in place. Sequences are batched
by length, so little compute goes to pads, and returned in the order they were drawn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from polydiff.diffusion.blocks import block_index, sampling_mask
from polydiff.diffusion.sampling import ReverseProcess, SamplingConfig

if TYPE_CHECKING:
    from polydiff.tasks.diffusion_task import DiffusionTask


@dataclass
class Generation:
    """Generated sequences and what they cost.

    Args:
        sequences: decoded SMILES (from the model's representation), in the order drawn.
        nfe: model calls (function evaluations) per sequence.
        lengths: tokens per sequence ([CLS]/[SEP] excluded; a template's fixed tokens included).
        seed: the seed that reproduces them (with the same batch size and device).
        seconds: wall time of the generation.
    """

    sequences: list[str]
    nfe: Tensor
    lengths: Tensor
    seed: int
    seconds: float

    @property
    def samples_per_s(self) -> float:
        return len(self.sequences) / max(self.seconds, 1e-9)


def encode_template(task: DiffusionTask, prompt: str) -> Tensor:
    """Token ids of a template, [CLS] and [SEP] included.

    Raises:
        ValueError: if it has no [MASK], has tokens the tokenizer does not know, holds other
            special tokens, or is longer than the model's positions.
    """
    tokenizer = task.tokenizer
    encoding = tokenizer.backend_tokenizer.encode(prompt)
    ids = torch.tensor(encoding.ids)
    pieces = zip(encoding.offsets, encoding.ids, strict=True)
    unknown = [prompt[a:b] for (a, b), i in pieces if i == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"prompt {prompt!r} has pieces the tokenizer does not know: {unknown}")
    if not (ids == task.mask_token_id).any():
        raise ValueError(f"prompt {prompt!r} has no [MASK] token to fill in")
    inner = ids[1:-1]
    if torch.isin(inner[inner != task.mask_token_id], task.structural_ids).any():
        raise ValueError(f"prompt {prompt!r} may hold no special token other than [MASK]")
    max_positions = task.model.config.max_position_embeddings
    if len(ids) > max_positions:
        raise ValueError(
            f"prompt {prompt!r} is {len(ids)} tokens with [CLS] and [SEP]; the model takes {max_positions}"
        )
    return ids


def draw_lengths(task: DiffusionTask, num_samples: int, generator: torch.Generator) -> Tensor:
    """Draws lengths L (tokens between [CLS] and [SEP]) from the checkpoint's length histogram."""
    histogram = task.length_histogram.double().clone()
    histogram[task.model.config.max_position_embeddings - 1 :] = 0  # [CLS] + L + [SEP] must fit
    if histogram.sum() <= 0:
        raise ValueError("this model has no length histogram (not trained with `fit`): pass a length or a prompt")
    if num_samples == 0:
        return torch.zeros(0, dtype=torch.long, device=histogram.device)
    return torch.multinomial(histogram, num_samples, replacement=True, generator=generator)


def _initial_batch(task: DiffusionTask, lengths: Tensor, templates: list[Tensor] | None) -> Tensor:
    """x at t = 1: [CLS], [MASK] x L (or a template), [SEP], pads."""
    if templates is not None:
        return torch.nn.utils.rnn.pad_sequence(templates, batch_first=True, padding_value=task.pad_token_id)
    position = torch.arange(int(lengths.max()) + 2, device=lengths.device)
    x = torch.where(position <= lengths.unsqueeze(-1), task.mask_token_id, task.pad_token_id)
    x[:, 0] = task.tokenizer.cls_token_id
    x[torch.arange(len(lengths)), lengths + 1] = task.tokenizer.sep_token_id
    return x


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[], None] | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task_id = progress.add_task("sampling", total=total)
        yield lambda: progress.advance(task_id)


def _decode_blocks(
    process: ReverseProcess,
    x: Tensor,
    positions: Tensor,
    pad_token_id: int,
    block_size: int,
    generator: torch.Generator,
    on_step: Callable[[], None] | None,
) -> tuple[Tensor, Tensor]:
    """Block diffusion: denoises block 0, then block 1, ..., each seeing only the blocks before it."""
    blocks = block_index(positions, block_size)
    attention = sampling_mask(positions, (x != pad_token_id) & ~positions, block_size)
    calls = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for k in range(int(blocks.max()) + 1):
        x, block_calls = process.sample(x, attention, generator, on_step, positions, active=blocks == k)
        calls += block_calls
    return x, calls


def generate(
    task: DiffusionTask,
    num_samples: int,
    config: SamplingConfig | None = None,
    length: int | None = None,
    prompts: Sequence[str] | None = None,
    batch_size: int = 256,
    seed: int | None = None,
    progress: bool = False,
) -> Generation:
    """Samples sequences from a task's model.

    Args:
        task: a trained task; runs on its device.
        num_samples: sequences to draw (per prompt when ``prompts`` are given).
        config: steps, strategy, temperature, top_p, randomness, cache.
        length: tokens per sequence instead of the training histogram.
        prompts: templates whose [MASK] tokens are filled in; ``num_samples`` each, grouped
            by prompt in the output.
        batch_size: sequences denoised together.
        seed: makes the output reproducible (same batch size and device); None draws one.
        progress: show a progress bar on stderr.

    Returns:
        The sequences, with NFE and lengths per sequence, the seed and the wall time.
    """
    config = config or SamplingConfig()
    if num_samples < 0 or batch_size < 1:
        raise ValueError(f"need num_samples >= 0 and batch_size >= 1, got {num_samples} and {batch_size}")
    device = task.device
    generator = torch.Generator(device=device)
    seed = generator.seed() if seed is None else generator.manual_seed(seed).initial_seed()
    start = time.perf_counter()

    templates = None
    if prompts is not None:
        encoded = [encode_template(task, p).to(device) for p in prompts]
        templates = [t for t in encoded for _ in range(num_samples)]
        sizes = torch.tensor([len(t) for t in templates], dtype=torch.long, device=device) - 2
    elif length is not None:
        if not 0 < length <= task.model.config.max_position_embeddings - 2:
            raise ValueError(f"length must lie in 1..{task.model.config.max_position_embeddings - 2}, got {length}")
        sizes = torch.full((num_samples,), length, device=device)
    else:
        sizes = draw_lengths(task, num_samples, generator)

    block_size = task.diffusion_process.config.block_size
    if block_size:  # each block runs its own reverse process: at most one step per token
        config = replace(config, steps=min(config.steps, block_size))
    process = ReverseProcess(
        task.model.encode,
        task.logits_from_hidden,
        task.schedule,
        task.mask_token_id,
        config,
        time_conditioned=task.model.time_embedding is not None,
        position_times=task.diffusion_process.position_times if task.diffusion_process.config.order_skew else None,
    )
    # Sort by length so that a batch holds similar lengths: little compute goes to pads.
    batches = [batch for batch in torch.argsort(sizes, stable=True).split(batch_size) if len(batch)]
    sequences: list[str] = [""] * len(sizes)
    nfe = torch.zeros(len(sizes), dtype=torch.long)
    frame = torch.tensor([task.pad_token_id, task.tokenizer.cls_token_id, task.tokenizer.sep_token_id], device=device)
    passes = [-(-int(sizes[batch].max()) // block_size) if block_size else 1 for batch in batches]
    was_training = task.training
    task.eval()  # no dropout while sampling, e.g. when called during validation
    try:
        with _progress_bar(progress, sum(passes) * config.steps) as on_step:
            for batch in batches:
                rows = batch.tolist()
                x = _initial_batch(task, sizes[batch], None if templates is None else [templates[i] for i in rows])
                positions = ~torch.isin(x, frame)  # the L tokens between [CLS] and [SEP]
                if block_size:
                    x, calls = _decode_blocks(process, x, positions, task.pad_token_id, block_size, generator, on_step)
                else:
                    x, calls = process.sample(x, (x != task.pad_token_id).long(), generator, on_step, positions)
                texts = task.tokenizer.batch_decode(x.tolist(), skip_special_tokens=True)
                for i, text in zip(rows, texts, strict=True):
                    sequences[i] = task.representation.to_smiles(text)
                nfe[batch.cpu()] = calls.cpu()
    finally:
        task.train(was_training)
    return Generation(sequences, nfe, sizes.cpu(), seed, time.perf_counter() - start)
