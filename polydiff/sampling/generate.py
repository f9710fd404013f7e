"""Generation from a trained model (a ``Denoiser``): lengths, templates, batches, decoding.

Each sequence is [CLS] + L tokens + [SEP] + pads. A block-diffusion model generates [SEP] itself:
blocks are decoded after [CLS] until every sequence has ended. Otherwise L is drawn from the
training length histogram kept in the checkpoint. A fixed ``length`` or a template (``prompts``)
sets L for either kind (a block model is then kept from ending early). A template is a string in
the model's representation (SMILES, or SELFIES symbols) whose ``[MASK]`` tokens are generated
while every other token stays in place. Sequences are batched by length, so little compute goes
to pads, and returned in the order they were drawn. The speculative decoder (the default of a
model that ends its own sequences) runs one batch of ``batch_size`` rows instead, each row starting
the next sequence as soon as its own ends.
"""

from __future__ import annotations

import gc
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from polydiff.chem.fragments import fragment_template
from polydiff.sampling.blockwise import decode_blocks, decode_next_tokens, decode_prefix, decode_until_end
from polydiff.sampling.config import SamplingConfig
from polydiff.sampling.constraints.kekulization import MoleculePrefix
from polydiff.sampling.constraints.syntax import SmilesSyntax, SyntaxState, is_star
from polydiff.sampling.denoiser import Denoiser
from polydiff.sampling.fragments import FragmentPlan, decode_fragments
from polydiff.sampling.reverse import ReverseProcess
from polydiff.sampling.speculative import decode_speculative
from polydiff.sampling.threads import calls_on_torch_threads, one_thread_between_calls

LINK_EXAMPLE = "[*]C(=O)O.[*]N1CCCC1"  # two fragments a sample links


class Generation(list):
    """Generated sequences: a list of decoded SMILES (from the model's representation), in the
    order drawn, that also carries what they cost.

    Attributes:
        nfe: network evaluations per sequence (model calls; a guided call is two).
        lengths: tokens per sequence ([CLS]/[SEP] excluded; a template's fixed tokens included).
        seed: the seed that reproduces them (with the same batch size and device).
        seconds: wall time of the generation.

    Rebuilt from its sequences alone, as Lightning's collection utilities rebuild the lists they
    pass through, it carries no cost: each attribute is None.
    """

    def __init__(
        self,
        sequences: Iterable[str] = (),
        nfe: Tensor | None = None,
        lengths: Tensor | None = None,
        seed: int | None = None,
        seconds: float | None = None,
    ) -> None:
        super().__init__(sequences)
        self.nfe, self.lengths, self.seed, self.seconds = nfe, lengths, seed, seconds

    @property
    def samples_per_s(self) -> float | None:
        return None if self.seconds is None else len(self) / max(self.seconds, 1e-9)


def encode_template(model: Denoiser, prompt: str) -> Tensor:
    """Token ids of a template, [CLS] and [SEP] included.

    Raises:
        ValueError: if it has no [MASK], has tokens the tokenizer does not know, holds other
            special tokens, is longer than the model's positions, or fixes more than two ``*``
            for a polymer model.
    """
    tokenizer = model.tokenizer
    encoding = tokenizer.backend_tokenizer.encode(prompt)
    ids = torch.tensor(encoding.ids)
    pieces = zip(encoding.offsets, encoding.ids, strict=True)
    unknown = [prompt[a:b] for (a, b), i in pieces if i == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"prompt {prompt!r} has pieces the tokenizer does not know: {unknown}")
    mask = tokenizer.mask_token_id
    if not (ids == mask).any():
        raise ValueError(f"prompt {prompt!r} has no [MASK] token to fill in")
    inner = ids[1:-1]
    if torch.isin(inner[inner != mask], torch.tensor(tokenizer.all_special_ids)).any():
        raise ValueError(f"prompt {prompt!r} may hold no special token other than [MASK]")
    if len(ids) > model.max_positions:
        raise ValueError(
            f"prompt {prompt!r} is {len(ids)} tokens with [CLS] and [SEP]; the model takes {model.max_positions}"
        )
    if model.kind == "polymer" and prompt.replace(tokenizer.mask_token, "").count("*") > 2:
        raise ValueError(f"prompt {prompt!r} fixes more than two *: a repeat unit has two attachment points")
    return ids


def _fixes_only_a_start(template: Tensor, mask_token_id: int) -> bool:
    """Whether a template's [MASK]s run from its first one to its [SEP]: nothing fixed lies after them."""
    masks = (template[1:-1] == mask_token_id).nonzero().flatten()
    return bool(masks.numel()) and int(masks[0]) + len(masks) == len(template) - 2


def _check_fixed_start(prompt: str, template: Tensor, syntax: SmilesSyntax, mask_token_id: int) -> None:
    """Refuses a template whose fixed start no molecule (or repeat unit) can begin with: under the
    constraints, each of its rows would end at once, empty or invalid.

    Raises:
        ValueError: naming the first fixed token the SMILES rules refuse (they are stricter than
            RDKit in a few places: no ring closure right after ``)``), the start that no
            continuation can kekulize, or (a template that fixes only a start) [MASK]s too few to
            finish it.
    """
    state, prefix, written = syntax.start(1, template.device), MoleculePrefix(), ""
    for token in template[1:]:
        if token == mask_token_id:
            break
        text = syntax.tokens[int(token)]
        if not syntax.allowed(state)[0, token]:
            where = f"after {written!r}" if written else "as the first token"
            raise ValueError(
                f"prompt {prompt!r}: the SMILES rules the sampler keeps refuse {text!r} {where} "
                "(give a start they allow, or --syntax false to fill it as written)"
            )
        state, prefix, written = syntax.advance(state, token[None]), prefix.then(text), written + text
    if not prefix.can_complete():
        raise ValueError(f"prompt {prompt!r}: no continuation of {written!r} can be kekulized")
    masks = int((template == mask_token_id).sum())
    if _fixes_only_a_start(template, mask_token_id) and _too_short(syntax, state, masks):
        counted = f"{masks} [MASK]{'s' if masks > 1 else ''}"
        finished = f"{written!r} as" if written else "as"
        raise ValueError(f"prompt {prompt!r}: {counted} cannot finish {finished} {_ENDS_AS[syntax.stars]}: give more")


# What a sequence must be before it may end, by the automaton's count of * (None for molecules).
_ENDS_AS = {
    None: "a molecule (every ring and branch closed)",
    2: "a repeat unit (every ring and branch closed, two * on atoms of their own)",
}


def _too_short(syntax: SmilesSyntax, state: SyntaxState, room: int) -> bool:
    """Whether no token may follow ``state`` (one row) with ``room`` positions after it, [SEP]'s
    included: by the rules' count of the tokens still needed, a lower bound, no row could end there."""
    return not bool(syntax.allowed(state, torch.tensor([room], device=state.ids.device))[0].any())


def _star_tokens(model: Denoiser) -> Tensor:
    """(V,) bool: the tokens that write an attachment point (``*``, ``[*]``, ``[*:1]``, ...)."""
    tokens = model.tokenizer.convert_ids_to_tokens(list(range(len(model.tokenizer))))
    return torch.tensor([is_star(token) for token in tokens], device=model.device)


def _head(model: Denoiser, free_length: bool, unseen: Tensor | None) -> Callable[[Tensor], Tensor]:
    """The model's logits from its hidden states, with the tokens ``unseen`` (V,) never drawn."""

    def head(hidden: Tensor) -> Tensor:
        logits = model.logits_from_hidden(hidden, allow_end=free_length)
        return logits if unseen is None else logits.masked_fill(unseen, -math.inf)

    return head


def draw_lengths(model: Denoiser, num_samples: int, generator: torch.Generator) -> Tensor:
    """Draws lengths L (tokens between [CLS] and [SEP]) from the model's training length histogram."""
    histogram = model.length_histogram.double().clone()
    histogram[model.max_positions - 1 :] = 0  # [CLS] + L + [SEP] must fit
    if histogram.sum() <= 0:
        raise ValueError("this model has no length histogram (not trained with `fit`): pass a length or a prompt")
    if num_samples == 0:
        return torch.zeros(0, dtype=torch.long, device=histogram.device)
    return torch.multinomial(histogram, num_samples, replacement=True, generator=generator)


def _initial_batch(model: Denoiser, lengths: Tensor, templates: list[Tensor] | None) -> Tensor:
    """x at t = 1: [CLS], [MASK] x L (or a template), [SEP], pads."""
    tokenizer = model.tokenizer
    if templates is not None:
        return torch.nn.utils.rnn.pad_sequence(templates, batch_first=True, padding_value=tokenizer.pad_token_id)
    position = torch.arange(int(lengths.max()) + 2, device=lengths.device)
    x = torch.where(position <= lengths.unsqueeze(-1), tokenizer.mask_token_id, tokenizer.pad_token_id)
    x[:, 0] = tokenizer.cls_token_id
    x[torch.arange(len(lengths)), lengths + 1] = tokenizer.sep_token_id
    return x


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[int], None] | None]:
    """``advance(n)`` of a bar of ``total`` steps on stderr, or None."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task_id = progress.add_task("sampling", total=total)
        yield lambda n=1: progress.advance(task_id, n)


class _BatchProgress:
    """One batch's share of the bar: advanced once per decoder step, at most ``share`` times, and
    filled to ``share`` when the batch is done (most batches end before their longest path)."""

    def __init__(self, advance: Callable[[int], None] | None, share: int) -> None:
        self.advance, self.share, self.taken = advance, share, 0

    def step(self, steps: int = 1) -> None:
        steps = min(steps, self.share - self.taken)
        if self.advance is not None and steps > 0:
            self.taken += steps
            self.advance(steps)

    def finish(self) -> None:
        if self.advance is not None:
            self.advance(self.share - self.taken)


def _decode(
    model: Denoiser,
    head: Callable[[Tensor], Tensor],
    process: ReverseProcess | None,
    x: Tensor,
    config: SamplingConfig,
    generator: torch.Generator,
    on_step: Callable[[], None] | None,
    free_length: bool,
    syntax: SmilesSyntax | None,
    plan: FragmentPlan | None,
    samples: int,
    vocabulary: Tensor,
) -> tuple[Tensor, Tensor]:
    """Runs the decoder that fits the model on one batch: around fixed fragments, left to right
    (B = 1), block by block (B > 1; until the model ends, by verified or prefix drafts or the
    reverse process, or at a fixed length) or the whole sequence at once (no blocks). The
    speculative decoder writes ``samples`` sequences through the rows of x and draws from the tokens
    ``vocabulary`` (their ids) alone, with which the one-token decoder's fixed-length search writes
    its continuations; the others write one sequence per row."""
    block_size, tokenizer = model.block_size, model.tokenizer
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    if plan is not None:
        return decode_fragments(model, head, x, config, generator, on_step, syntax, plan)
    if config.strategy is None:  # one token per call: one-token blocks, or a draft head's model at a fixed length
        return decode_next_tokens(model, head, x, config, generator, on_step, free_length, syntax, vocabulary)
    if config.strategy == "speculative":
        steering = getattr(model, "steering", None)
        return decode_speculative(model, head, x, config, generator, on_step, syntax, steering, samples, vocabulary)
    if config.strategy == "prefix":
        return decode_prefix(model, head, x, config, generator, on_step, syntax)
    if block_size and free_length:
        return decode_until_end(process, x, sep, pad, block_size, model.causal_context, generator, on_step)
    if block_size:
        content = (x != pad) & (x != cls)
        return decode_blocks(process, x, content, cls, block_size, model.causal_context, generator, on_step)
    return process.sample(x, (x != pad).long(), generator, on_step)


def _check_steering(model: Denoiser, config: SamplingConfig, fragments: bool) -> None:
    """Refuses a steering width given (``polydiff.sampling.steering``; 0 too, which would turn off
    nothing) where the decoder cannot steer: only speculative decoding, which writes whole molecules
    left to right, takes back the ends of the rows it refuses. Where no width was given, the other
    decoders go without it."""
    if getattr(model, "steering_asked", False) and (config.strategy != "speculative" or fragments):
        raise ValueError(
            "steering: only speculative decoding of whole molecules steers its rows "
            "(a draft-head model writing without a template, fixed length or fragments): give no steering width, "
            "0 included, here"
        )


def _check_fragment_request(
    model: Denoiser, config: SamplingConfig, length: int | None, prompts: Sequence[str] | None
) -> None:
    """Raises ValueError where fragments cannot be kept: a model that does not write SMILES
    molecules left to right, or options the fragment decoder has no use for."""
    if prompts is not None or length is not None:
        raise ValueError("fragments decide what is written around them: give no prompt or length with them")
    if model.kind != "molecule":  # a unit's two * and a fragment's [*] would be read alike
        raise ValueError("fragments are for molecule models; this is a polymer model (write a template with --prompt)")
    if not model.representation.is_smiles:
        raise ValueError(f"fragments need a model of SMILES; this one writes {model.representation.name}")
    if not (model.block_size == 1 or model.causal_context):
        raise ValueError("fragments need a model that predicts the next token (one-token blocks or a causal context)")
    unused = sorted(config.changed() & {"steps", "strategy", "randomness", "threshold", "cache", "syntax"})
    if unused:
        raise ValueError(
            f"{', '.join(unused)}: fragments are decoded one model call per free token, with the key/value "
            "cache and the SMILES constraints always on"
        )


@contextmanager
def evaluating(model: object) -> Iterator[None]:
    """``model`` in eval mode inside the block (no dropout while sampling) and back in the mode it
    was in after it, where it is a torch module; Lightning leaves a task in train mode after a fit."""
    training = isinstance(model, torch.nn.Module) and model.training
    if training:
        model.eval()
    try:
        yield
    finally:
        if training:
            model.train()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pauses Python's cyclic garbage collector while decoding runs, and restores it after.

    Decoding allocates many containers that live a while (the kekulization check keeps a graph per
    prefix), and they set off collections over everything alive: ~0.35 s of a 5.8 s generation of
    1,000 samples even with the loaded model and libraries frozen (``gc.freeze``; docs/quality.md). It
    makes almost no reference cycles, and none that grow with the samples (``tests/sampling``), so
    reference counting frees its memory as it goes and nothing piles up while the collector rests.
    A collector someone else turned off stays off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _check_types(**arguments: Any) -> None:
    """``generate``'s arguments are of the types it declares: a count given as text or a config as a
    dict is one clear TypeError, not a comparison failing deep inside (or a string read as a list)."""
    integers = {"num_samples": False, "batch_size": False, "length": True, "seed": True}  # name: may be None
    for name, optional in integers.items():
        value = arguments[name]
        if not (isinstance(value, int) and not isinstance(value, bool)) and not (optional and value is None):
            raise TypeError(f"{name} must be an integer{' or None' if optional else ''}, got {value!r}")
    config, prompts, fragments = arguments["config"], arguments["prompts"], arguments["fragments"]
    if config is not None and not isinstance(config, SamplingConfig):
        raise TypeError(f"config must be a SamplingConfig, e.g. SamplingConfig(temperature=0.8), got {config!r}")
    if prompts is not None and (not prompts or not all(isinstance(p, str) for p in prompts)):
        raise TypeError(f"prompts must be a template or a non-empty list of them, got {prompts!r}")
    if fragments is not None and not isinstance(fragments, str):
        raise TypeError(f"fragments must be one string, several joined by '.' ({LINK_EXAMPLE}), got {fragments!r}")


def generate(
    model: Denoiser,
    num_samples: int,
    config: SamplingConfig | None = None,
    length: int | None = None,
    prompts: Sequence[str] | None = None,
    batch_size: int = 256,
    seed: int | None = None,
    progress: bool = False,
    fragments: str | None = None,
) -> Generation:
    """Samples sequences from a model (in eval mode: no dropout).

    Args:
        model: a trained denoiser (a ``DiffusionTask``); runs on its device.
        num_samples: sequences to draw (per prompt when ``prompts`` are given).
        config: how to sample; an option this model would ignore is refused.
        length: tokens per sequence, instead of the model's own ends (block diffusion) or the
            training histogram.
        prompts: templates whose [MASK] tokens are filled in (one, or a list); ``num_samples``
            each, grouped by prompt in the output.
        batch_size: sequences denoised together.
        seed: makes the output reproducible (same batch size and device); None draws one.
        progress: show a progress bar on stderr.
        fragments: fragments with ``[*]`` attachment points that every sample keeps, e.g.
            ``c1ccc([*])cc1[*]`` (decorate), ``[*]C(=O)c1ccccc1`` (extend) or
            ``[*]C(=O)O.[*]N1CCCC1`` (link; ``polydiff.sampling.fragments``).

    Returns:
        The sequences, with NFE and lengths per sequence, the seed and the wall time.

    Raises:
        TypeError: for an argument of another type (a count given as text, a config as a dict).
        ValueError: for a bad count, length or template, or an option with no effect on this model.
    """
    prompts = [prompts] if isinstance(prompts, str) else prompts
    _check_types(num_samples=num_samples, config=config, length=length, prompts=prompts, batch_size=batch_size,
                 seed=seed, fragments=fragments)  # fmt: skip
    config = config or SamplingConfig()
    unconstrained_by_choice = not config.syntax  # --syntax false: no warning that the rules are off
    if num_samples < 0 or batch_size < 1:
        raise ValueError(f"need num_samples >= 0 and batch_size >= 1, got {num_samples} and {batch_size}")
    if prompts is not None and length is not None:
        raise ValueError("give a length or prompts, not both: a prompt's length is its own")
    if seed is not None and not -(2**63) <= seed < 2**64:  # what torch's generators take
        raise ValueError(f"seed must fit in 64 bits, got {seed}")
    block_size, tokenizer, width, device = model.block_size, model.tokenizer, model.max_positions, model.device
    if fragments is not None:
        _check_fragment_request(model, config, length, prompts)
    # A block model writes [SEP] itself unless a length or template fixes where it goes.
    free_length = block_size > 0 and prompts is None and length is None
    encoded = None if prompts is None else [encode_template(model, p).to(device) for p in prompts]  # errors first
    # At a fixed length, whether every token to write comes after every fixed one: then nothing lies ahead
    # of a row that the SMILES rules could not foresee.
    fills_suffix = not free_length and (
        encoded is None or all(_fixes_only_a_start(t, tokenizer.mask_token_id) for t in encoded)
    )
    config = config.for_model(
        block_size,
        free_length,
        model.representation.is_smiles,
        model.causal_context,
        model.has_draft_head,
        fills_suffix,
    )
    _check_steering(model, config, fragments is not None)
    if free_length and model.length_histogram.any():
        # A model that ends its own sequences writes none longer than the longest it was trained on:
        # it has never seen one, and such runaway strings were most of what it got wrong.
        width = min(width, int(model.length_histogram.nonzero().max()) + 2)
    module = model
    model = calls_on_torch_threads(model)  # the decoder's own operations run on one thread
    generator = torch.Generator(device=device)
    if seed is None:
        seed = generator.seed()
    else:  # kept as given: torch reads a negative seed modulo 2**64, which the user never typed
        generator.manual_seed(seed)
    start = time.perf_counter()

    templates = None
    if encoded is not None:
        if block_size and model.representation.is_smiles and not (config.syntax or unconstrained_by_choice):
            # Fragments are a molecule model's way to fix parts under the rules; a polymer model's is a start.
            instead = (
                "fragments keep parts of a molecule fixed under the rules (--fragments)"
                if model.kind == "molecule"
                else "a repeat unit held to them fixes only its start (*C(=O)N[MASK]...)"
            )
            warnings.warn(
                "templates: this model writes left to right, so a [MASK] sees only the tokens before it (and "
                "its block's), and no SMILES rule holds these [MASK]s (the rules hold a template that fixes "
                f"only a start, where the model writes one token per call); {instead}",
                UserWarning,
                stacklevel=2,
            )
        templates = [t for t in encoded for _ in range(num_samples)]
        sizes = torch.tensor([len(t) for t in templates], dtype=torch.long, device=device) - 2
    elif length is not None:
        if not 0 < length <= width - 2:
            raise ValueError(f"length must lie in 1..{width - 2}, got {length}")
        sizes = torch.full((num_samples,), length, device=device)
    elif free_length:
        sizes = torch.zeros(num_samples, dtype=torch.long, device=device)  # the model decides
    else:
        sizes = draw_lengths(model, num_samples, generator)

    # Tokens the training data never had (exotic bracket atoms, for a MOSES model; '.', for the
    # polymer corpus) are not drawn.
    unseen = model.token_histogram == 0 if model.token_histogram.any() else None
    # A polymer model's repeat units have exactly two attachment points, kept as the syntax is.
    stars = 2 if model.kind == "polymer" else None
    dots = unseen is None or not bool(unseen[tokenizer.convert_tokens_to_ids(".")])
    syntax = SmilesSyntax(tokenizer, device, stars, dots) if config.syntax else None
    if syntax is not None and encoded is not None:
        for prompt, template in zip(prompts, encoded, strict=True):
            _check_fixed_start(prompt, template, syntax, tokenizer.mask_token_id)
    if syntax is not None and length is not None and _too_short(syntax, syntax.start(1, device), length):
        raise ValueError(f"length {length} is too short to write {_ENDS_AS[syntax.stars]}")
    plan = None
    if fragments is not None:
        plan = FragmentPlan(fragment_template(fragments), tokenizer, syntax)
        if plan.shortest + 2 > model.max_positions:  # with [CLS] and [SEP]
            raise ValueError(
                f"fragments {fragments!r} take {plan.shortest} tokens with an atom in each [*]: the model writes "
                f"at most {model.max_positions - 2}"
            )
        # The holes together may write as much as a whole training molecule, besides the fragments.
        width = min(model.max_positions, width + plan.fixed_tokens)
    # Templates that fix both attachment points leave their [MASK]s no * to write (a third would
    # make no repeat unit); a template with fewer leaves the rest to the model. Their rows are
    # decoded in batches of their own, whose head draws no *.
    closed = torch.zeros(len(sizes), dtype=torch.bool, device=device)
    # A given length puts [SEP] in its place: the model may not end a sequence before it.
    heads = {False: _head(model, free_length, unseen)}
    if templates is not None and model.kind == "polymer":
        stars = _star_tokens(model)
        closed = torch.tensor([int(stars[t].sum()) == 2 for t in templates], device=device)
        if closed.any():
            heads[True] = _head(model, free_length, stars if unseen is None else unseen | stars)

    # The tokens the head gives any probability (a forbidden one's logit is so low that its
    # probability rounds to 0): the speculative decoder's distributions span these alone.
    never = model.forbidden(free_length) if unseen is None else model.forbidden(free_length) | unseen
    vocabulary = (~never).nonzero().squeeze(-1)

    if block_size:  # each block runs its own reverse process: at most one step per token
        config = replace(config, steps=min(config.steps, block_size))
    processes = dict.fromkeys(heads)  # one-token blocks and prefix decoding draw their tokens without one
    if config.strategy in ("confidence", "ancestral"):
        processes = {
            kind: ReverseProcess(
                model.encode, head, model.schedule, tokenizer.mask_token_id, config, model.time_conditioned
            )
            for kind, head in heads.items()
        }
    # Sort by length so that a batch holds similar lengths: little compute goes to pads. The
    # speculative decoder takes every sample in one batch of ``batch_size`` rows, each row starting
    # the next sample as soon as its own ends. Fragments are written one token per call, whatever the
    # model's strategy, a batch at a time.
    stream = config.strategy == "speculative" and plan is None
    order = torch.argsort(sizes, stable=True)
    groups = [order[closed[order] == kind] for kind in heads]
    batches = [batch for group in groups for batch in group.split(max(len(group), 1) if stream else batch_size)]
    batches = [batch for batch in batches if len(batch)]
    sequences: list[str] = [""] * len(sizes)
    nfe = torch.zeros(len(sizes), dtype=torch.long)
    lengths = sizes.cpu().clone()
    frame = torch.tensor([tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id], device=device)
    # Steps of the bar per batch: at most what its decoder can take; a batch that ends early fills its share.
    if stream:  # its steps are counted in samples written
        shares = [len(batch) for batch in batches]
    elif config.strategy in (None, "prefix") or plan is not None:
        shares = [width - 1 if free_length else int(sizes[batch].max()) + 1 for batch in batches]
    elif free_length:
        shares = [-(-(width - 1) // block_size) * config.steps] * len(batches)
    else:
        blocks = [-(-(int(sizes[batch].max()) + 1) // block_size) if block_size else 1 for batch in batches]
        shares = [count * config.steps for count in blocks]
    with (
        _progress_bar(progress, sum(shares)) as advance,
        _collector_paused(),
        one_thread_between_calls(device),
        evaluating(module),
    ):
        for batch, share in zip(batches, shares, strict=True):
            bar = _BatchProgress(advance, share)
            rows = batch.tolist()
            if free_length:  # [CLS], then [MASK]s to the last position: the model ends each row
                x = torch.full((min(len(batch), batch_size), width), tokenizer.mask_token_id, device=device)
                x[:, 0] = tokenizer.cls_token_id
            else:
                x = _initial_batch(model, sizes[batch], None if templates is None else [templates[i] for i in rows])
            kind = bool(closed[batch[0]])
            x, calls = _decode(
                model,
                heads[kind],
                processes[kind],
                x,
                config,
                generator,
                bar.step,
                free_length,
                syntax,
                plan,
                len(batch),
                vocabulary,
            )
            # What each row wrote: its own end, or a fixed end, or short of it at a dead end.
            lengths[batch.cpu()] = (~torch.isin(x, frame)).sum(-1).cpu()
            texts = tokenizer.batch_decode(x.tolist(), skip_special_tokens=True)
            for i, text in zip(rows, texts, strict=True):
                sequences[i] = model.representation.to_smiles(text)
            nfe[batch.cpu()] = calls.cpu() * model.evaluations_per_call
            bar.finish()
    short = int((lengths < sizes.cpu()).sum()) if not free_length else 0
    if short:
        warnings.warn(
            f"{short} of {len(sizes)} samples end short of their fixed length, invalid: they met a dead end, "
            "where no continuation under the SMILES rules fills the rest of the template or length",
            stacklevel=2,
        )
    return Generation(sequences, nfe, lengths, seed, time.perf_counter() - start)
