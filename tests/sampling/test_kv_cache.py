"""The key/value cache: decoding that reuses the committed tokens' keys and values draws the same
samples as decoding that re-encodes the prefix every call."""

import math

import pytest
import torch
from test_blockwise import TOKENS  # a sibling module: pytest puts this folder on the path
from test_speculative import TINY, causal_task

from polydiff.diffusion import DiffusionConfig
from polydiff.diffusion.blocks import window_mask
from polydiff.sampling import SamplingConfig
from polydiff.sampling.blockwise import decode_next_tokens
from polydiff.sampling.constraints.syntax import SmilesSyntax
from polydiff.sampling.generate import encode_template
from polydiff.sampling.speculative import decode_speculative
from polydiff.tasks.diffusion_task import DiffusionTask


def head_of(task: DiffusionTask):
    return lambda hidden: task.logits_from_hidden(hidden).masked_fill(task.token_histogram == 0, -math.inf)


def free_batch(task: DiffusionTask, rows: int) -> torch.Tensor:
    x = torch.full((rows, task.max_positions), task.tokenizer.mask_token_id)
    x[:, 0] = task.tokenizer.cls_token_id
    return x


@pytest.fixture(scope="module")
def speculative_task() -> DiffusionTask:
    return causal_task(TOKENS, dict(zip(TOKENS, [3.0, 2.0, 1.0, 1.0, 1.0, 1.5, 3.0, 2.5, 1.0, 2.5, 1.0], strict=True)))


@pytest.fixture(scope="module")
def draft_head_task() -> DiffusionTask:
    bias = [3.0, 2.0, 1.0, 1.0, 1.0, 1.5, 3.0, 2.5, 1.0, 2.5, 1.0]
    return causal_task(TOKENS, dict(zip(TOKENS, bias, strict=True)), drafter="head")


@pytest.fixture(scope="module")
def one_token_task() -> DiffusionTask:
    torch.manual_seed(0)
    task = DiffusionTask(model_config=TINY, diffusion_config=DiffusionConfig(block_size=1)).eval()
    task.token_histogram[task.tokenizer.convert_tokens_to_ids(TOKENS)] = 1.0
    return task


def test_incremental_states_equal_the_full_pass(speculative_task):
    """A prefix encoded in two pieces through the cache, then windows at ragged starts, give the
    states one pass over [prefix ; windows] under ``window_mask`` gives."""
    task, block_size = speculative_task, speculative_task.block_size
    generator = torch.Generator().manual_seed(0)
    rows, length = 3, 12
    x = torch.randint(5, len(task.tokenizer), (rows, length), generator=generator)
    x[:, 0] = task.tokenizer.cls_token_id
    starts = torch.tensor([[3, 5], [7, 8], [12, 12]])  # each window sees the positions before its start
    slots = starts.unsqueeze(-1) + torch.arange(block_size)
    in_window = slots < length

    content = torch.ones_like(x, dtype=torch.bool)
    content[:, 0] = False
    attention = window_mask(content, ~content, starts, in_window)
    masks = torch.full((rows, slots[0].numel()), task.tokenizer.mask_token_id)
    ids = torch.cat([torch.arange(length).expand(rows, -1), slots.flatten(1).clamp(max=length - 1)], -1)
    with torch.no_grad():
        expected = task.encode(torch.cat([x, masks], -1), attention, None, ids)
        cache = task.new_cache(rows, length)
        everyone = torch.arange(rows)
        first = torch.arange(5).expand(rows, -1)
        second = torch.arange(5, length).expand(rows, -1)
        context = task.encode_incremental(cache, everyone, x[:, :5], first, first + 1, torch.full_like(first, -1))
        later = task.encode_incremental(cache, everyone, x[:, 5:], second, second + 1, torch.full_like(second, -1))
        # Slots past the sequence stand alone (a group of their own), as window_mask leaves them.
        group = torch.where(in_window, torch.arange(2).view(1, 2, 1), 2 + torch.arange(2 * block_size).view(2, -1))
        windows = task.encode_incremental(
            cache,
            everyone,
            masks,
            slots.flatten(1).clamp(max=length - 1),
            starts.repeat_interleave(block_size, -1),
            group.flatten(1),
        )
    torch.testing.assert_close(torch.cat([context, later], 1), expected[:, :length], atol=1e-5, rtol=1e-4)
    valid = in_window.flatten(1)
    torch.testing.assert_close(windows[valid], expected[:, length:][valid], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("drafter", ["windows", "head"])
@pytest.mark.parametrize("syntax", [False, True])
@pytest.mark.parametrize("rows", [48, 12])
def test_speculative_decoding_draws_the_same_samples_with_the_cache(request, drafter, syntax, rows):
    """48 sequences in 48 rows, and in 12, each row starting a new sequence when its own ends: the
    cache's keys and values of an ended sequence are never read for the next one in its row."""
    task = request.getfixturevalue("speculative_task" if drafter == "windows" else "draft_head_task")
    decoded = []
    for cache in (False, True):
        config = SamplingConfig(syntax=syntax, cache=cache).for_model(task.block_size, True, True, True)
        rules = SmilesSyntax(task.tokenizer, torch.device("cpu")) if syntax else None
        generator = torch.Generator().manual_seed(0)
        x = free_batch(task, rows)
        decoded.append(decode_speculative(task, head_of(task), x, config, generator, None, rules, samples=48))
    (uncached, uncached_calls), (cached, cached_calls) = decoded
    assert cached.shape[0] == 48
    assert torch.equal(cached, uncached)
    assert torch.equal(cached_calls, uncached_calls)
    assert (cached_calls < (cached != task.tokenizer.pad_token_id).sum(-1) - 1).any()  # drafts were accepted
    assert not (cached == task.tokenizer.mask_token_id).any()  # every sequence was written to its end


@pytest.mark.parametrize("templates", [False, True])
def test_one_token_decoding_draws_the_same_samples_with_the_cache(one_token_task, templates):
    """Free-length rows, and templates whose fixed tokens leave the rows' new positions ragged."""
    task = one_token_task
    decoded = []
    for cache in (False, True):
        config = SamplingConfig(cache=cache).for_model(1, not templates, True, False)
        if templates:
            prompts = ["C[MASK][MASK]O[MASK]", "[MASK]CC[MASK]N[MASK][MASK]C", "[MASK]"]
            encoded = [encode_template(task, prompt) for prompt in prompts for _ in range(8)]
            x = torch.nn.utils.rnn.pad_sequence(encoded, batch_first=True, padding_value=task.tokenizer.pad_token_id)
        else:
            x = free_batch(task, 32)
        rules = SmilesSyntax(task.tokenizer, torch.device("cpu"))
        generator = torch.Generator().manual_seed(0)
        decoded.append(decode_next_tokens(task, head_of(task), x, config, generator, None, not templates, rules))
    (uncached, uncached_calls), (cached, cached_calls) = decoded
    assert torch.equal(cached, uncached)
    assert torch.equal(cached_calls, uncached_calls)
    assert not (cached == task.tokenizer.mask_token_id).any()


def test_a_templates_fixed_atoms_are_part_of_the_ring_check():
    """Only ring label 1 may be drawn: in ``C[MASK]C[MASK][MASK][MASK]`` it opens a ring on the first C and
    would close it on the second, bonding two atoms that are bonded already, which no continuation
    repairs; the row ends there, short of its template's [SEP]. The check sees the fixed atoms
    (without them it saw a ring opened before any atom)."""
    torch.manual_seed(0)
    task = DiffusionTask(model_config=TINY, diffusion_config=DiffusionConfig(block_size=1)).eval()
    task.token_histogram[task.tokenizer.convert_tokens_to_ids(["1"])] = 1.0
    x = encode_template(task, "C[MASK]C[MASK][MASK][MASK]").unsqueeze(0)
    config = SamplingConfig(cache=True).for_model(1, False, True, False)
    rules = SmilesSyntax(task.tokenizer, torch.device("cpu"))
    filled, _ = decode_next_tokens(task, head_of(task), x, config, torch.Generator().manual_seed(0), None, False, rules)
    assert task.tokenizer.convert_ids_to_tokens(filled[0].tolist()) == ["[CLS]", "C", "1", "C", "[SEP]", *["[PAD]"] * 3]
