"""Speculative decoding: the block denoiser drafts, the next-token prediction verifies, in one call."""

import gc
import math

import pytest
import torch
from test_blockwise import TOKENS, replay  # a sibling module: pytest puts this folder on the path

from polydiff.chem.molecules import parse
from polydiff.diffusion import DiffusionConfig
from polydiff.diffusion.blocks import sampling_mask
from polydiff.model.bert_diffusion import ModelConfig
from polydiff.sampling import SamplingConfig, generate, speculative
from polydiff.sampling.constraints import completion
from polydiff.sampling.constraints.syntax import SmilesSyntax
from polydiff.tasks.diffusion_task import DiffusionTask

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=40)


def causal_task(tokens: list[str], bias: dict[str, float], drafter: str = "windows") -> DiffusionTask:
    """An untrained B = 4 model with a causal context that writes only ``tokens``; ``bias`` makes its
    head sure of some of them (its drafts and its next-token prediction still differ). ``drafter``:
    the encoder's own windows draft, or a draft head."""
    torch.manual_seed(0)
    config = DiffusionConfig(block_size=4, causal_context=True, drafter=drafter)
    task = DiffusionTask(model_config=TINY, diffusion_config=config).eval()
    task.token_histogram[task.tokenizer.convert_tokens_to_ids(tokens)] = 1.0
    with torch.no_grad():
        for token, value in bias.items():
            task.output_projection[-1].bias[task.tokenizer.convert_tokens_to_ids(token)] += value
    return task


@pytest.fixture(scope="module")
def task() -> DiffusionTask:
    return causal_task(TOKENS, dict(zip(TOKENS, [3.0, 2.0, 1.0, 1.0, 1.0, 1.5, 3.0, 2.5, 1.0, 2.5, 1.0], strict=True)))


def next_token_probs(task: DiffusionTask, prefix: list[int]) -> torch.Tensor:
    """p(. | [CLS] + prefix) from the causal states alone, over the tokens the sampler may draw."""
    x = torch.tensor([[task.tokenizer.cls_token_id, *prefix]])
    content = torch.ones_like(x, dtype=torch.bool)
    content[:, 0] = False
    with torch.no_grad():
        hidden = task.encode(x, sampling_mask(content, ~content, 1))[:, -1]
        logits = task.logits_from_hidden(hidden)[0].masked_fill(task.token_histogram == 0, -math.inf)
    if not prefix:
        logits[task.tokenizer.sep_token_id] = -math.inf  # a sample has at least one token
    return logits.double().softmax(-1)


@pytest.mark.parametrize("drafter", ["windows", "head"])
def test_samples_follow_the_next_token_prediction_exactly(drafter):
    """Whatever the drafts, a committed token has the next-token prediction's distribution
    (speculative sampling): the first two tokens of 4,000 samples against p(a) p(b | a), computed
    from the causal states alone. Drafts are accepted often enough for the test to mean something."""
    tokens = ["C", "O", "N", "[SEP]"]
    task = causal_task(tokens, {"C": 1.0, "[SEP]": -1.0}, drafter)
    ids = task.tokenizer.convert_tokens_to_ids(tokens)
    expected = {}
    first = next_token_probs(task, [])
    for a in ids[:3]:
        second = next_token_probs(task, [a])
        for b in ids:
            expected[(a, b)] = float(first[a] * second[b])
    n = 4000
    generation = generate(task, n, SamplingConfig(top_p=1.0, syntax=False), batch_size=500, seed=0)
    counts = dict.fromkeys(expected, 0)
    for smiles in generation:
        pieces = task.tokenizer(smiles, add_special_tokens=False)["input_ids"][:2]
        counts[(pieces[0], pieces[1] if len(pieces) > 1 else task.tokenizer.sep_token_id)] += 1
    chi_square = sum((counts[cell] - n * p) ** 2 / (n * p) for cell, p in expected.items())
    assert chi_square < 32.9  # the 0.1% tail of chi-square with 11 degrees of freedom
    # Several tokens per call: fewer calls than tokens ([SEP] included) over the batch.
    assert generation.nfe.sum() < 0.8 * (generation.lengths + 1).sum()


@pytest.mark.parametrize("syntax", [False, True])
def test_the_tokens_the_distributions_span_change_no_sample(task, syntax):
    """Distributions over the tokens the head may give mass (11 of the vocabulary here) and over the
    whole vocabulary, where the others have probability 0, draw the same samples under one seed."""
    config = SamplingConfig(syntax=syntax).for_model(task.block_size, True, True, True)
    rules = SmilesSyntax(task.tokenizer, torch.device("cpu")) if syntax else None
    drawable = (task.token_histogram > 0).nonzero().squeeze(-1)
    decoded = []
    for vocabulary in (None, drawable):
        x = torch.full((16, task.max_positions), task.tokenizer.mask_token_id)
        x[:, 0] = task.tokenizer.cls_token_id
        head = lambda hidden: task.logits_from_hidden(hidden).masked_fill(task.token_histogram == 0, -math.inf)  # noqa: E731
        generator = torch.Generator().manual_seed(0)
        decoded.append(
            speculative.decode_speculative(
                task, head, x, config, generator, None, rules, samples=32, vocabulary=vocabulary
            )
        )
    (everything, everything_calls), (drawn, drawn_calls) = decoded
    assert len(drawable) == len(TOKENS) < len(task.tokenizer)
    assert torch.equal(everything, drawn)
    assert torch.equal(everything_calls, drawn_calls)


def test_every_committed_prefix_keeps_to_the_rules(task):
    generation = generate(task, 48, SamplingConfig(), seed=0)
    replayed = [replay(task, smiles) for smiles in generation]
    assert all(kept for kept, _ in replayed)
    ended = torch.tensor([end for _, end in replayed])
    assert ended.sum() >= 8
    assert generation.nfe[ended].sum() < (generation.lengths[ended] + 1).sum()


def cycles_left(task: DiffusionTask, samples: int, **options) -> int:
    """The objects in reference cycles that ``generate`` leaves (freed by the collector alone)."""
    gc.collect()
    gc.disable()
    try:
        generate(task, samples, seed=0, **options)
        assert not gc.isenabled()
    finally:
        gc.enable()
    return gc.collect()


def test_decoding_pauses_the_collector_and_leaves_no_cycles_that_grow_with_the_samples(task, monkeypatch):
    """Python's cyclic garbage collector rests while decoding runs and is on again after (one the
    caller turned off stays off); what decoding leaves for it does not grow with the samples, so
    nothing piles up while it rests."""
    enabled, allowed_within = [], SmilesSyntax.allowed_within

    def automaton(*args, **kwargs):
        enabled.append(gc.isenabled())
        return allowed_within(*args, **kwargs)

    monkeypatch.setattr(SmilesSyntax, "allowed_within", automaton)
    generate(task, 16, SamplingConfig(), seed=0)
    assert enabled and not any(enabled)
    assert gc.isenabled()
    monkeypatch.undo()
    assert cycles_left(task, 128) <= cycles_left(task, 8)


def test_decoding_runs_its_own_operations_on_one_thread_and_lends_the_model_torchs(task, monkeypatch):
    """On the CPU the model's calls run on torch's threads and the decoder's own operations (here
    the automaton's) on one; torch has its threads back afterwards, and no sample changes."""
    threads = {"model": set(), "automaton": set()}
    encode_incremental, allowed_within = task.encode_incremental, SmilesSyntax.allowed_within

    def model_call(*args, **kwargs):
        threads["model"].add(torch.get_num_threads())
        return encode_incremental(*args, **kwargs)

    def automaton(*args, **kwargs):
        threads["automaton"].add(torch.get_num_threads())
        return allowed_within(*args, **kwargs)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = generate(task, 16, SamplingConfig(), seed=0)
        torch.set_num_threads(2)
        monkeypatch.setattr(task, "encode_incremental", model_call)
        monkeypatch.setattr(SmilesSyntax, "allowed_within", automaton)
        shared = generate(task, 16, SamplingConfig(), seed=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert threads == {"model": {2}, "automaton": {1}}
    assert shared == alone


def test_without_constraints_the_same_model_breaks_the_rules(task):
    free = generate(task, 48, SamplingConfig(syntax=False), seed=0)
    assert sum(not replay(task, smiles)[0] for smiles in free) >= 24


def refused_shares(task: DiffusionTask, smiles: str) -> list[float]:
    """The share of p (top_p 1) the rules refuse at each position of ``smiles``, [SEP] included."""
    syntax = SmilesSyntax(task.tokenizer)
    state, prefix, shares = syntax.start(1, torch.device("cpu")), [], []
    for token in [*task.tokenizer(smiles, add_special_tokens=False)["input_ids"], task.tokenizer.sep_token_id]:
        shares.append(float(next_token_probs(task, prefix)[~syntax.allowed(state)[0]].sum()))
        state = syntax.advance(state, torch.tensor([token]))
        prefix.append(token)
    return shares


def test_a_row_backs_out_where_the_rules_refuse_most_of_p(monkeypatch):
    """Restricting p commits tokens the model barely wanted (a ring closed because [SEP] was refused).
    Without the rule, about a fifth of the rows hold a position where the rules refused more than
    half of p; with it, and rewinds to spare, none does. Position 0 is left out: the sampler also refuses
    tokens no SMILES starts with, which the p of ``next_token_probs`` keeps."""
    task = causal_task(TOKENS, {"C": 3.0, "(": 1.0, "1": 1.0, "[SEP]": 1.5})
    config = SamplingConfig(top_p=1.0)
    monkeypatch.setattr(speculative, "MAX_REWINDS", 12)
    monkeypatch.setattr(speculative, "REFUSED_REWINDS", 12)
    monkeypatch.setattr(speculative, "REFUSED_SHARE", 1.0)  # the rule off
    loose = generate(task, 96, config, seed=0)
    assert sum(max(refused_shares(task, smiles)[1:]) > 0.5 for smiles in loose) >= 16  # 20 at this seed
    monkeypatch.setattr(speculative, "REFUSED_SHARE", 0.5)
    strict = generate(task, 96, config, seed=0)
    assert all(max(refused_shares(task, smiles)[1:]) <= 0.5 + 1e-9 for smiles in strict)


def kept_decoders(monkeypatch) -> list:
    """The speculative decoders that ``generate`` makes from now on (one per batch), kept for a look
    at their state after decoding."""
    decoders = []
    setup = speculative._SpeculativeDecoder.__init__

    def keep(self, *args, **kwargs):
        setup(self, *args, **kwargs)
        decoders.append(self)

    monkeypatch.setattr(speculative._SpeculativeDecoder, "__init__", keep)
    return decoders


def test_a_row_backs_out_to_the_causal_states_of_its_committed_tokens(task, monkeypatch):
    """A row that backs out draws again from the state it kept for the position before: after
    decoding, the kept states of every row's committed tokens are those of a fresh causal pass over
    them (the last token's state is computed only by a call after it)."""
    decoders = kept_decoders(monkeypatch)
    generate(task, 16, SamplingConfig(), seed=0)
    decoder = decoders[0]
    assert decoder.rewinds.sum() >= 8
    assert_kept_states_are_causal(task, decoder)


def test_a_row_that_starts_a_new_sequence_keeps_that_sequences_states(task, monkeypatch):
    """48 samples through 8 rows: the states kept for each row's last sequence are its own."""
    decoders = kept_decoders(monkeypatch)
    generation = generate(task, 48, SamplingConfig(), batch_size=8, seed=0)
    assert len(decoders) == 1 and len(decoders[0].x) == 8
    assert len(generation) == 48 and (generation.nfe > 0).all()
    assert_kept_states_are_causal(task, decoders[0])


def assert_kept_states_are_causal(task: DiffusionTask, decoder) -> None:
    for row in range(len(decoder.x)):
        end = int(decoder.position[row])
        x = decoder.x[row : row + 1, :end]
        content = torch.ones_like(x, dtype=torch.bool)
        content[:, 0] = False
        with torch.no_grad():
            fresh = task.encode(x, sampling_mask(content, ~content, 1))[0, : end - 1]
        torch.testing.assert_close(decoder.states[row, : end - 1], fresh, atol=1e-4, rtol=1e-4)


def test_temperature_zero_is_the_greedy_path_of_the_next_token_prediction():
    tokens = ["C", "O", "N", "[SEP]"]
    task = causal_task(tokens, {"C": 1.0})
    generation = generate(task, 4, SamplingConfig(temperature=0.0, syntax=False), seed=0)
    assert len(set(generation)) == 1
    prefix: list[int] = []
    for _ in range(task.max_positions - 1):
        token = int(next_token_probs(task, prefix).argmax())
        if token == task.tokenizer.sep_token_id:
            break
        prefix.append(token)
    assert generation[0] == task.tokenizer.decode(prefix).replace(" ", "")


def test_a_row_stops_at_the_last_position_of_the_model():
    """A model that never ends fills every position and stops there, without an index error."""
    task = causal_task(["C", "[SEP]"], {"[SEP]": -30.0})
    generation = generate(task, 3, SamplingConfig(syntax=False), seed=0)
    assert all(length == task.max_positions - 1 for length in generation.lengths.tolist())
    assert (generation.nfe < generation.lengths).all()


def test_a_trained_model_writes_no_sequence_longer_than_its_longest_training_one():
    """Past the longest training length a model has only ever seen [SEP]; the sampler bounds each row
    there and keeps the end within reach, so every row closes its rings and branches in time."""
    task = causal_task(TOKENS, dict(zip(TOKENS, [3.0, 2.0, 1.0, 1.0, 1.0, 1.5, 3.0, 2.5, 1.0, 2.5, -2.0], strict=True)))
    task.length_histogram[8:13] = 1.0  # trained on 8 to 12 tokens
    generation = generate(task, 64, SamplingConfig(), seed=0)
    assert generation.lengths.max() <= 12
    replayed = [replay(task, smiles) for smiles in generation]
    assert all(kept for kept, _ in replayed)
    # [SEP] came where a string may end in half the rows; the others met a dead end: this model is
    # sure of "=" (a ring is never closed by a bond symbol it was not opened with) and of tokens the
    # rules refuse, so its rows also spend their rewinds backing out of positions refused mostly.
    assert sum(ended for _, ended in replayed) >= 28


# Tokens the completion search writes with, so that with no budget it is exhaustive.
RING_TOKENS = ["C", "c", "O", "N", "n", "1", "2", "[SEP]"]


@pytest.fixture(scope="module")
def head_task() -> DiffusionTask:
    """A draft head's model sure of aromatic atoms and ring labels: rings that must be finished in time."""
    return causal_task(RING_TOKENS, {"c": 2.0, "C": 1.0, "1": 1.0, "n": 0.5}, drafter="head")


@pytest.mark.parametrize("length", [6, 15, 25])
def test_at_a_fixed_length_every_row_fills_it_and_ends_a_molecule(head_task, length, monkeypatch):
    """At a fixed length a draft head's model writes one token per call, each one after which the
    row can still fill every position up to its [SEP] and end valid there (``CompletionSearch``).
    A search without budgets over every token the model draws is exhaustive, so a kept token always
    has a continuation the model can draw, and no row meets a dead end: every sample is a molecule
    of exactly the length asked. With the automaton's bound alone, 12, 23 and 35 of these 48 rows
    ran out of room, or ended short where nothing could follow a finished ring."""
    for limit in ("MAX_NODES", "MAX_NODES_PER_DRAW", "MAX_SLACK"):
        monkeypatch.setattr(completion, limit, 10**9)
    result = generate(head_task, 48, SamplingConfig(), length=length, seed=0)
    for sample in result:
        assert len(head_task.tokenizer.tokenize(sample)) == length, sample
        assert parse(sample) is not None, sample
