"""Generation from a trained DiffusionTask: lengths, templates, batches, decoding.

Each sequence is [CLS] + L tokens + [SEP] + pads. A block-diffusion model generates [SEP] itself:
blocks are decoded after [CLS] until every sequence has ended. Otherwise L is drawn from the
training length histogram kept in the checkpoint. A fixed ``length`` or a template (``prompts``)
sets L for either kind (a block model is then kept from ending early). A template is a string in
the model's representation (SMILES, or SELFIES symbols) whose ``[MASK]`` tokens are generated
while every other token stays in place. Sequences are batched by length, so little compute goes
to pads, and returned in the order they were drawn.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from polydiff.data.aromaticity import MoleculePrefix
from polydiff.data.smiles_syntax import SmilesSyntax
from polydiff.diffusion.blocks import block_index, sampling_mask
from polydiff.diffusion.sampling import ReverseProcess, SamplingConfig, draw_tokens

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
    content: Tensor,
    cls_token_id: int,
    block_size: int,
    generator: torch.Generator,
    on_step: Callable[[], None] | None,
) -> tuple[Tensor, Tensor]:
    """Block diffusion at a fixed length: denoises block 0, then block 1, ..., each seeing only the
    blocks before it; ``content`` is everything after [CLS] but pads, [SEP] included."""
    blocks = block_index(content, block_size)
    attention = sampling_mask(content, x == cls_token_id, block_size)
    calls = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for k in range(int(blocks.max()) + 1):
        x, block_calls = process.sample(x, attention, generator, on_step, active=blocks == k)
        calls += block_calls
    return x, calls


def _pad_after_end(x: Tensor, sep_token_id: int, pad_token_id: int) -> Tensor:
    """x with every position after a row's first [SEP] set to [PAD]."""
    is_end = (x == sep_token_id).long()
    return x.masked_fill(is_end.cumsum(-1) - is_end > 0, pad_token_id)


def _decode_until_end(
    process: ReverseProcess,
    x: Tensor,
    sep_token_id: int,
    pad_token_id: int,
    block_size: int,
    generator: torch.Generator,
    on_step: Callable[[], None] | None,
) -> tuple[Tensor, Tensor]:
    """Block diffusion without a length: decodes x = [CLS] + [MASK]s block by block until every
    row has generated [SEP] or filled the model's positions. A block sees only the blocks before
    it, so each pass runs on the decoded prefix and the current block alone, and only on the rows
    still going."""
    calls = torch.zeros(len(x), dtype=torch.long, device=x.device)
    num_blocks = -(-(x.shape[1] - 1) // block_size)
    for k in range(num_blocks):
        running = ~(x == sep_token_id).any(-1)
        if not running.any():
            for _ in range((num_blocks - k) * process.config.steps if on_step is not None else 0):
                on_step()
            break
        rows, end = running.nonzero().squeeze(-1), min(1 + (k + 1) * block_size, x.shape[1])
        prefix = x[rows, :end]
        content = torch.ones_like(prefix, dtype=torch.bool)
        content[:, 0] = False
        active = torch.zeros_like(content)
        active[:, 1 + k * block_size :] = True
        attention = sampling_mask(content, ~content, block_size)
        x[rows, :end], block_calls = process.sample(prefix, attention, generator, on_step, active=active)
        calls[rows] += block_calls
        x = _pad_after_end(x, sep_token_id, pad_token_id)  # a block may have drawn tokens past [SEP]
    return x, calls


def _cannot_start(task: DiffusionTask) -> list[int]:
    """Token ids a sequence may not start with: [SEP] (a sample has at least one token) and, for
    SELFIES, ring and branch symbols (with no atom before them they decode to nothing)."""
    ids = [task.tokenizer.sep_token_id]
    if task.representation.name == "selfies":
        ids += [i for token, i in task.tokenizer.get_vocab().items() if "Ring" in token or "Branch" in token]
    return ids


def _draw_completable(
    logits: Tensor,
    prefixes: list[MoleculePrefix],
    vocabulary: Sequence[str],
    config: SamplingConfig,
    generator: torch.Generator,
) -> tuple[Tensor, list[MoleculePrefix | None]]:
    """Draws one token per row, refusing tokens after which no SMILES could be kekulized.

    A refused token is removed from its row's distribution and the row draws again: a draw from
    the distribution restricted to the tokens that keep the molecule completable. A row with no
    such token gets None for its prefix: no continuation can make it valid (the check is
    conservative, so a prefix can pass it and still be a dead end).

    Returns:
        (the tokens, (R,); the rows' prefixes with them).
    """
    tokens = draw_tokens(logits, config, generator)[0]
    after: list[MoleculePrefix | None] = [p.then(vocabulary[t]) for p, t in zip(prefixes, tokens.tolist(), strict=True)]
    pending = [row for row, prefix in enumerate(after) if not prefix.can_complete()]
    while pending:
        index = torch.tensor(pending, device=logits.device)
        logits[index, tokens[index]] = -math.inf
        exhausted = torch.isinf(logits[index]).all(-1)
        for row in index[exhausted].tolist():
            after[row] = None
        pending = index[~exhausted].tolist()
        if pending:
            tokens[pending] = draw_tokens(logits[pending], config, generator)[0]
        refused = []
        for row, token in zip(pending, tokens[pending].tolist(), strict=True):
            after[row] = prefixes[row].then(vocabulary[token])
            if not after[row].can_complete():
                refused.append(row)
        pending = refused
    return tokens, after


@torch.inference_mode()
def _decode_next_tokens(
    task: DiffusionTask,
    head: Callable[[Tensor], Tensor],
    x: Tensor,
    config: SamplingConfig,
    generator: torch.Generator,
    on_step: Callable[[], None] | None,
    free_length: bool,
    syntax: SmilesSyntax | None,
) -> tuple[Tensor, Tensor]:
    """One-token blocks: fills the [MASK]s of x left to right, each drawn from the hidden state of
    the token before it (the causal model ``DiffusionTask`` trains at B = 1). A pass runs on the
    prefix before the drawn position, for the rows that draw there.

    Args:
        head: hidden states to logits (the task's head, with what may not be drawn removed).
        x: (R, N) [CLS], then [MASK]s to fill and fixed tokens; [SEP] and pads too, unless
            ``free_length``: then all [MASK]s, ended by the [SEP] the model draws (pads after it).
        syntax: restricts every draw to the tokens that keep the SMILES well-formed and its
            aromatic rings kekulizable (``polydiff.data.aromaticity``).

    Returns:
        (the filled tokens, the model calls per row).
    """
    sep, pad, mask = task.tokenizer.sep_token_id, task.pad_token_id, task.mask_token_id
    calls = torch.zeros(len(x), dtype=torch.long, device=x.device)
    state = syntax.start(len(x), x.device) if syntax is not None else None
    prefixes = [MoleculePrefix()] * len(x)
    for p in range(1, x.shape[1]):
        draw = x[:, p] == mask
        if draw.any():
            rows = draw.nonzero().squeeze(-1)
            prefix = x[rows, :p]
            content = (prefix != pad) & (prefix != task.tokenizer.cls_token_id)
            hidden = task.model.encode(prefix, sampling_mask(content, ~content & (prefix != pad), 1))[:, -1]
            logits = head(hidden)
            if p == 1:
                logits[:, _cannot_start(task)] = -math.inf
            if syntax is None:
                x[rows, p] = draw_tokens(logits, config, generator)[0]
            else:
                logits = logits.masked_fill(~syntax.allowed(state)[rows], -math.inf)
                drawing = [prefixes[row] for row in rows.tolist()]
                x[rows, p], drawn = _draw_completable(logits, drawing, syntax.tokens, config, generator)
                for row, prefix in zip(rows.tolist(), drawn, strict=True):
                    if prefix is None:  # no valid molecule can come of it: end it, not write on
                        x[row, p], prefix = sep, MoleculePrefix()
                    prefixes[row] = prefix
            calls[rows] += 1
        if syntax is not None:
            state = syntax.advance(state, x[:, p])
        if free_length:
            x = _pad_after_end(x, sep, pad)
        done = not (x[:, p + 1 :] == mask).any()
        if on_step is not None:
            for _ in range(x.shape[1] - p if done else 1):  # a finished batch fills its part of the bar
                on_step()
        if done:
            break
    return x, calls


def _decode(
    task: DiffusionTask,
    process: ReverseProcess,
    x: Tensor,
    config: SamplingConfig,
    generator: torch.Generator,
    on_step: Callable[[], None] | None,
    free_length: bool,
    syntax: SmilesSyntax | None,
) -> tuple[Tensor, Tensor]:
    """Runs the decoder that fits the model on one batch: left to right (B = 1), block by block
    (B > 1; until the model ends, or at a fixed length) or the whole sequence at once (no blocks)."""
    block_size = task.diffusion_process.config.block_size
    cls, sep, pad = task.tokenizer.cls_token_id, task.tokenizer.sep_token_id, task.pad_token_id
    if block_size == 1:
        return _decode_next_tokens(task, process.head, x, config, generator, on_step, free_length, syntax)
    if block_size and free_length:
        return _decode_until_end(process, x, sep, pad, block_size, generator, on_step)
    if block_size:
        return _decode_blocks(process, x, (x != pad) & (x != cls), cls, block_size, generator, on_step)
    positions = (x != pad) & (x != cls) & (x != sep)  # the L tokens between [CLS] and [SEP]
    return process.sample(x, (x != pad).long(), generator, on_step, positions)


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
        config: steps, strategy, temperature, top_p, randomness, cache, syntax.
        length: tokens per sequence, instead of the model's own ends (block diffusion) or the
            training histogram.
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

    block_size = task.diffusion_process.config.block_size
    free_length = task.generates_end and prompts is None and length is None
    templates = None
    if prompts is not None:
        encoded = [encode_template(task, p).to(device) for p in prompts]
        templates = [t for t in encoded for _ in range(num_samples)]
        sizes = torch.tensor([len(t) for t in templates], dtype=torch.long, device=device) - 2
    elif length is not None:
        if not 0 < length <= task.model.config.max_position_embeddings - 2:
            raise ValueError(f"length must lie in 1..{task.model.config.max_position_embeddings - 2}, got {length}")
        sizes = torch.full((num_samples,), length, device=device)
    elif free_length:
        sizes = torch.zeros(num_samples, dtype=torch.long, device=device)  # the model decides
    else:
        sizes = draw_lengths(task, num_samples, generator)

    smiles_one_by_one = free_length and block_size == 1 and task.representation.is_smiles
    syntax = SmilesSyntax(task.tokenizer, device) if config.syntax and smiles_one_by_one else None
    width = task.model.config.max_position_embeddings
    # A given length puts [SEP] in its place: the model may not end a sequence before it. Tokens
    # the training data never had (exotic bracket atoms, for a MOSES model) are not drawn.
    unseen = task.token_histogram == 0 if task.token_histogram.any() else None

    def head(hidden: Tensor) -> Tensor:
        logits = task.logits_from_hidden(hidden, allow_end=free_length)
        return logits if unseen is None else logits.masked_fill(unseen, -math.inf)

    if block_size:  # each block runs its own reverse process: at most one step per token
        config = replace(config, steps=min(config.steps, block_size))
    process = ReverseProcess(
        task.model.encode,
        head,
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
    lengths = sizes.cpu().clone()
    frame = torch.tensor([task.pad_token_id, task.tokenizer.cls_token_id, task.tokenizer.sep_token_id], device=device)
    if free_length:
        passes = [-(-(width - 1) // block_size)] * len(batches)
    elif block_size == 1:
        passes = [int(sizes[batch].max()) + 1 for batch in batches]
    else:
        passes = [-(-(int(sizes[batch].max()) + 1) // block_size) if block_size else 1 for batch in batches]
    was_training = task.training
    task.eval()  # no dropout while sampling, e.g. when called during validation
    try:
        with _progress_bar(progress, sum(passes) * config.steps) as on_step:
            for batch in batches:
                rows = batch.tolist()
                if free_length:  # [CLS], then [MASK]s to the last position: the model ends each row
                    x = torch.full((len(batch), width), task.mask_token_id, device=device)
                    x[:, 0] = task.tokenizer.cls_token_id
                else:
                    x = _initial_batch(task, sizes[batch], None if templates is None else [templates[i] for i in rows])
                x, calls = _decode(task, process, x, config, generator, on_step, free_length, syntax)
                if free_length:
                    lengths[batch.cpu()] = (~torch.isin(x, frame)).sum(-1).cpu()
                texts = task.tokenizer.batch_decode(x.tolist(), skip_special_tokens=True)
                for i, text in zip(rows, texts, strict=True):
                    sequences[i] = task.representation.to_smiles(text)
                nfe[batch.cpu()] = calls.cpu()
    finally:
        task.train(was_training)
    return Generation(sequences, nfe, lengths, seed, time.perf_counter() - start)
