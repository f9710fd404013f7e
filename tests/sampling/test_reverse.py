import math

import pytest
import torch

from polydiff.diffusion import CosineSchedule, DiffusionConfig, LinearSchedule
from polydiff.model.bert_diffusion import ModelConfig
from polydiff.sampling import ReverseProcess, SamplingConfig
from polydiff.sampling.generate import generate
from polydiff.sampling.reverse import draw_from_probs, log_probs, outside_nucleus, reverse_step_probs
from polydiff.tasks.diffusion_task import DiffusionTask

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)
MASK = 4


@pytest.fixture(scope="module")
def task():
    """An untrained tiny BERT: its p_theta is spread over the whole vocabulary, the hard case for a sampler."""
    torch.manual_seed(0)
    task = DiffusionTask(model_config=TINY, schedule=CosineSchedule()).eval()
    task.length_histogram[[3, 10, 30]] = torch.tensor([1.0, 2.0, 1.0])
    return task


class KnownDenoiser:
    """A denoiser whose p_theta is a fixed distribution; it counts the [MASK] tokens of every x_t it sees."""

    def __init__(self, probs: torch.Tensor) -> None:
        self.logits = probs.log()
        self.masked: list[int] = []

    def encode(self, x, attention_mask, t):
        self.masked.append(int((x == MASK).sum()))
        return torch.zeros(*x.shape, 1)

    def head(self, hidden):
        return self.logits.expand(len(hidden), -1)


@pytest.mark.parametrize(("t", "s"), [(1.0, 0.9), (0.5, 0.25), (0.1, 0.05), (0.3, 0.0)])
def test_reverse_step_is_a_distribution_that_ends_clean(t, s):
    schedule = CosineSchedule()
    alpha_t, alpha_s = schedule.alpha(torch.tensor([t, s], dtype=torch.float64)).tolist()
    p_theta = torch.softmax(torch.randn(6, 20, dtype=torch.float64), -1)
    p_theta[:, MASK] = 0
    p_theta /= p_theta.sum(-1, keepdim=True)
    probs = reverse_step_probs(p_theta, alpha_t, 1.0 if s == 0 else alpha_s, MASK)
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(6, dtype=torch.float64))
    if s == 0:
        assert (probs[:, MASK] == 0).all()  # at s = 0 nothing can stay masked


def test_reverse_process_retraces_the_forward_marginals_and_draws_p_theta():
    # Without cache the denoiser sees every unfinished x_t: the [MASK] count must follow
    # 1 - alpha(t) on the grid, and the revealed tokens must follow p_theta.
    p_theta = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.3, 0.15, 0.05])
    denoiser = KnownDenoiser(p_theta)
    schedule, steps = CosineSchedule(), 8
    process = ReverseProcess(
        denoiser.encode,
        denoiser.head,
        schedule,
        MASK,
        SamplingConfig(steps=steps, strategy="ancestral", top_p=1.0, cache=False),
    )
    x = torch.full((400, 50), MASK)
    out, nfe = process.sample(x, torch.ones_like(x), torch.Generator().manual_seed(0))
    grid = torch.linspace(1, 0, steps + 1, dtype=torch.float64)[:-1]
    expected = (1 - schedule.alpha(grid)).tolist()
    assert [n / x.numel() for n in denoiser.masked] == pytest.approx(expected, abs=0.01)
    assert (out != MASK).all()
    frequencies = torch.bincount(out.flatten(), minlength=len(p_theta)).double() / out.numel()
    torch.testing.assert_close(frequencies, p_theta.double(), atol=0.01, rtol=0)
    assert (nfe <= steps).all() and (nfe == steps).any()  # a row stops calling once it is clean


def test_top_p_keeps_the_smallest_nucleus_and_temperature_zero_takes_the_mode():
    logits = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.15), math.log(0.05)]])
    kept = log_probs(logits, top_p=0.75).exp()
    torch.testing.assert_close(kept, torch.tensor([[0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0]], dtype=torch.float64))
    assert log_probs(logits, top_p=0.4).exp()[0, 0] == 1  # the most likely token always stays
    denoiser = KnownDenoiser(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.7]))
    process = ReverseProcess(
        denoiser.encode, denoiser.head, LinearSchedule(), MASK, SamplingConfig(steps=4, temperature=0)
    )
    out, _ = process.sample(torch.full((8, 5), MASK), torch.ones(8, 5), torch.Generator().manual_seed(0))
    assert (out == 6).all()


@pytest.mark.parametrize("strategy", ["ancestral", "confidence"])
@pytest.mark.parametrize("steps", [1, 7, 64])
def test_samples_are_clean_and_never_structural(task, strategy, steps):
    config = SamplingConfig(steps=steps, strategy=strategy)
    process = ReverseProcess(task.model.encode, task.logits_from_hidden, task.schedule, task.mask_token_id, config)
    x = torch.full((16, 22), task.pad_token_id)
    x[:, 0], x[:, 1:20], x[:, 20] = task.tokenizer.cls_token_id, task.mask_token_id, task.tokenizer.sep_token_id
    x[::2, 15:] = task.pad_token_id  # some shorter rows
    x[::2, 14] = task.tokenizer.sep_token_id
    out, nfe = process.sample(x, (x != task.pad_token_id).long(), torch.Generator().manual_seed(0))
    generated = x == task.mask_token_id
    assert not torch.isin(out[generated], task.structural_ids).any()
    assert torch.equal(out[~generated], x[~generated])  # [CLS], [SEP] and pads stay
    assert (nfe <= generated.sum(-1) + 1).all()


@pytest.mark.parametrize("strategy", ["ancestral", "confidence"])
@pytest.mark.parametrize("time_conditioning", [False, True])
def test_cache_changes_the_cost_not_the_samples(strategy, time_conditioning):
    torch.manual_seed(0)
    config = ModelConfig(**{**vars(TINY), "time_conditioning": time_conditioning})
    task = DiffusionTask(model_config=config, schedule=CosineSchedule()).eval()
    task.length_histogram[5:25] = 1
    runs = {
        cache: generate(task, 24, SamplingConfig(steps=50, strategy=strategy, cache=cache), batch_size=8, seed=3)
        for cache in (True, False)
    }
    assert runs[True] == runs[False]
    assert (runs[True].nfe <= runs[True].lengths + 1).all()
    assert runs[True].nfe.float().mean() < runs[False].nfe.float().mean()


def test_same_seed_same_samples(task):
    config = SamplingConfig(steps=32)
    first, again, other = (task.sample(24, config=config, seed=seed, batch_size=8) for seed in (7, 7, 8))
    assert first == again
    assert first != other


def test_lengths_follow_the_histogram(task):
    result = generate(task, 2000, SamplingConfig(steps=1), batch_size=500, seed=0)
    counts = torch.bincount(result.lengths, minlength=31).double()
    assert set(torch.nonzero(counts).flatten().tolist()) == {3, 10, 30}
    expected = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    torch.testing.assert_close(counts[[3, 10, 30]] / 2000, expected, atol=0.04, rtol=0)


def test_fixed_length_overrides_the_histogram(task):
    result = generate(task, 20, SamplingConfig(steps=8), length=12, seed=0)
    assert (result.lengths == 12).all()
    with pytest.raises(ValueError, match="length"):
        generate(task, 2, length=63)


def test_prompts_keep_their_fixed_tokens(task):
    prompts = ["CC(=O)[MASK][MASK][MASK]N", "[MASK]c1ccccc1[MASK]"]
    for strategy in ("ancestral", "confidence"):
        samples = task.sample(6, config=SamplingConfig(steps=16, strategy=strategy), prompt=prompts, seed=0)
        assert len(samples) == 12
        assert all(s.startswith("CC(=O)") and s.endswith("N") for s in samples[:6])
        assert all("c1ccccc1" in s for s in samples[6:])


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("CCO", "no \\[MASK\\]"),
        ("CC[MASK]Xq", "does not know"),
        ("C[SEP][MASK]", "special"),
        ("C" * 70 + "[MASK]", "takes 64"),
    ],
)
def test_malformed_prompts_are_clear_errors(task, prompt, message):
    with pytest.raises(ValueError, match=message):
        task.sample(1, prompt=prompt)


def test_a_prompt_brings_its_own_length():
    task = DiffusionTask(model_config=TINY).eval()
    with pytest.raises(ValueError, match="give a length or prompts, not both"):
        task.sample(1, prompt="CC[MASK]", length=10)


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1])
def test_a_seed_past_64_bits_is_refused(seed):
    task = DiffusionTask(model_config=TINY).eval()
    with pytest.raises(ValueError, match="seed must fit in 64 bits"):
        task.sample(1, length=5, seed=seed)
    assert len(task.sample(1, config=SamplingConfig(steps=4), length=5, seed=2**64 - 1)) == 1


def test_a_model_without_histogram_asks_for_a_length():
    task = DiffusionTask(model_config=TINY).eval()
    with pytest.raises(ValueError, match="length histogram"):
        task.sample(1)
    assert len(task.sample(3, config=SamplingConfig(steps=4), length=5)) == 3


@pytest.mark.parametrize("block_size", [2, 4])
def test_block_diffusion_decodes_blocks_in_order(task, monkeypatch, block_size):
    # Every model call must see a prefix of finished blocks, one block being decoded and nothing
    # revealed after it; the output is a full molecule-length sequence with nothing left masked.
    seen = []
    encode = task.model.encode

    def recording_encode(x, *rest):
        seen.append(x.clone())
        return encode(x, *rest)

    monkeypatch.setattr(task.model, "encode", recording_encode)
    monkeypatch.setattr(task.diffusion_process.config, "block_size", block_size)
    generation = generate(task, 6, length=10, seed=0)
    assert all(len(s) > 0 for s in generation)
    assert (generation.nfe <= 10 + 10 // block_size + 1).all()
    for x in seen:
        revealed = (x[:, 1:11] != task.mask_token_id).long()
        # Revealed positions never follow a masked one by more than a block: blocks are done in turn.
        for row in revealed:
            first_masked = int(row.argmin()) if not row.all() else 10
            assert not row[(first_masked // block_size + 1) * block_size :].any()


def test_one_token_blocks_decode_left_to_right_from_clean_prefixes(task, monkeypatch):
    # B = 1 is a causal model: token p is drawn from a pass over tokens 0 .. p - 1, none masked;
    # with the key/value cache each call encodes only token p - 1, which sees those before it.
    seen = []
    encode = task.model.encode_incremental

    def recording_encode(cache, rows, input_ids, positions, sees_before, *rest):
        seen.append((input_ids.clone(), positions.clone(), sees_before.clone()))
        return encode(cache, rows, input_ids, positions, sees_before, *rest)

    monkeypatch.setattr(task.model, "encode_incremental", recording_encode)
    monkeypatch.setattr(task.diffusion_process.config, "block_size", 1)
    generation = generate(task, 6, length=10, seed=0)
    assert [positions.unique().tolist() for _, positions, _ in seen] == [[p] for p in range(10)]  # [SEP] is given
    assert all((sees_before == positions + 1).all() for _, positions, sees_before in seen)
    assert not any((ids == task.mask_token_id).any() for ids, _, _ in seen)
    assert generation.nfe.tolist() == [10] * 6


@pytest.fixture
def block_task():
    """An untrained tiny block-diffusion model (B = 2): it generates [SEP] itself."""
    torch.manual_seed(0)
    return DiffusionTask(model_config=TINY, diffusion_config=DiffusionConfig(block_size=2)).eval()


def test_a_block_model_chooses_its_lengths_and_each_call_sees_a_prefix(block_task, monkeypatch):
    widths = []
    encode = block_task.model.encode

    def recording_encode(x, *rest):
        widths.append(x.shape[1])
        assert not (x[:, :-2] == block_task.mask_token_id).any()  # only the last block is still masked
        return encode(x, *rest)

    monkeypatch.setattr(block_task.model, "encode", recording_encode)
    # Untrained, the logits are nearly flat; a bias of ln(V / 10) on [SEP] gives it a probability
    # of about 1/11 at every position, so lengths are nearly geometric with mean ~10.
    with torch.no_grad():
        block_task.output_projection[-1].bias[block_task.tokenizer.sep_token_id] = math.log(block_task.vocab_size / 10)
    generation = generate(block_task, 16, SamplingConfig(strategy="confidence"), seed=0)  # the reverse process
    lengths = generation.lengths
    assert len(set(lengths.tolist())) > 4
    # Blocks of 2 from position 1: the longest row's [SEP], at position L + 1, is in the block that
    # ends the prefix at width 2 * (L // 2) + 3.
    longest = int(lengths.max())
    assert min(widths) == 3 and max(widths) == min(TINY.max_position_embeddings, 2 * (longest // 2) + 3)
    assert widths == sorted(widths)  # the prefix grows block by block, and stops with the longest row
    # A block of 2 takes at most 2 calls; a row is called only until its block with [SEP].
    assert (generation.nfe <= 2 * (lengths // 2 + 1)).all()
    assert [s == "" for s in generation] == (lengths == 0).tolist()


@pytest.mark.parametrize(("sep_bias", "expected_length"), [(100.0, 0), (-100.0, TINY.max_position_embeddings - 1)])
def test_a_block_model_stops_at_its_end_or_at_the_last_position(block_task, sep_bias, expected_length):
    with torch.no_grad():
        block_task.output_projection[-1].bias[block_task.tokenizer.sep_token_id] = sep_bias
    generation = generate(block_task, 5, SamplingConfig(steps=2, strategy="confidence"), seed=0)
    assert generation.lengths.tolist() == [expected_length] * 5
    if expected_length == 0:
        assert generation == [""] * 5 and generation.nfe.tolist() == [2] * 5  # one block (2 steps), done


def test_a_given_length_keeps_a_block_model_from_ending_early(block_task):
    with torch.no_grad():
        block_task.output_projection[-1].bias[block_task.tokenizer.sep_token_id] = 100.0  # it would end at once
    generation = generate(block_task, 4, SamplingConfig(steps=2), length=9, seed=0)
    assert generation.lengths.tolist() == [9] * 4
    assert all(len(block_task.tokenizer.tokenize(s)) == 9 for s in generation)


@pytest.mark.parametrize("block_size", [0, 1])
def test_no_token_the_training_data_lacked_is_drawn(block_size):
    torch.manual_seed(0)
    task = DiffusionTask(model_config=TINY, diffusion_config=DiffusionConfig(block_size=block_size)).eval()
    task.length_histogram[5:10] = 1
    seen = task.tokenizer.convert_tokens_to_ids(["C", "O", "(", ")", "[SEP]"])
    task.token_histogram[seen] = 1.0  # an untrained model draws from all 126 tokens otherwise
    sequences = generate(task, 16, length=6, seed=0)
    assert all(set(task.tokenizer.tokenize(s)) <= {"C", "O", "(", ")"} for s in sequences)


def test_inverse_transform_draws_follow_the_probabilities_and_never_a_zero():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2], [2.0, 0.0, 0.0, 0.0, 6.0]], dtype=torch.float64)
    draws = torch.stack([draw_from_probs(probs, torch.Generator().manual_seed(seed)) for seed in range(4000)])
    for row, p in enumerate(probs):
        frequencies = torch.bincount(draws[:, row], minlength=5).double() / len(draws)
        # 4,000 draws: a frequency's standard deviation is at most 0.008; 0.03 is ~4 of them.
        torch.testing.assert_close(frequencies, p / p.sum(), atol=0.03, rtol=0)
        assert frequencies[p == 0].sum() == 0


def test_the_nucleus_from_the_first_candidates_is_the_nucleus_of_a_full_sort():
    generator = torch.Generator().manual_seed(0)
    for scale in (0.3, 3.0, 10.0):  # flat distributions reach past the candidates, peaked ones do not
        log_p = torch.log_softmax(torch.randn(64, 300, generator=generator, dtype=torch.float64) * scale, -1)
        ranked, order = log_p.sort(-1, descending=True)
        p = ranked.exp()
        expected = torch.zeros_like(log_p, dtype=torch.bool).scatter_(-1, order, p.cumsum(-1) - p >= 0.9)
        assert torch.equal(outside_nucleus(log_p, 0.9), expected)
