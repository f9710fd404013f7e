"""Steering toward property targets: the property head, and finished rows it refuses taken back."""

import math

import pytest
import torch
from rdkit import Chem
from test_guidance import conditioned_task  # sibling modules: pytest puts this folder on the path
from test_speculative import kept_decoders

from polydiff.model.property_head import ENCODER_GRADIENT, PropertyHead
from polydiff.sampling import SamplingConfig, generate, speculative
from polydiff.sampling.steering import Steering


def _head_with_shares(hidden: int, columns: int, seed: int) -> PropertyHead:
    """A head whose per-token shares g are not zero (they start at zero)."""
    head = PropertyHead(hidden, columns)
    torch.nn.init.normal_(head.contribution[-1].weight, generator=torch.Generator().manual_seed(seed))
    return head


def test_the_mean_is_the_last_states_read_plus_the_shares_of_the_tokens_read_so_far():
    """mu_i = f(h_i) + sum_{j <= i, j read} g(h_j); a position not read adds nothing."""
    head = _head_with_shares(8, 2, seed=4)
    states = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(5))
    read = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    with torch.no_grad():
        mean, log_variance = head(states, read)
        f, expected_log_variance = head.mlp(states).chunk(2, -1)
        g = head.contribution(states)
        for row in range(2):
            for i in range(5):
                expected = f[row, i] + sum(g[row, j] for j in range(i + 1) if read[row, j])
                torch.testing.assert_close(mean[row, i], expected)
        torch.testing.assert_close(log_variance, expected_log_variance)
        last_mean, _ = head.last(states, torch.tensor([2, 4]))
        torch.testing.assert_close(last_mean, torch.stack([mean[0, 2], mean[1, 4]]))


def test_a_new_head_reads_the_last_state_alone():
    """g's last layer starts at zero: a head written before the sum loads with the same answers."""
    head = PropertyHead(8, 2)
    states = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        mean, _ = head(states, torch.ones(3, 4, dtype=torch.bool))
        torch.testing.assert_close(mean, head.mlp(states).chunk(2, -1)[0])


def test_acceptance_is_the_unnormalised_gaussian_of_the_target_widened_by_the_heads_uncertainty():
    """a(x) = exp(-(mu - c)^2 / (2 (tau^2 + s^2))), multiplied over the targeted columns: 1 on target."""
    head = _head_with_shares(8, 2, seed=0)
    steering = Steering(head, torch.tensor([1]), torch.tensor([0.5]), 0.3)
    states = torch.randn(5, 6, 8, generator=torch.Generator().manual_seed(0))
    last = torch.tensor([5, 2, 0, 3, 4])
    with torch.no_grad():
        mean, log_variance = head.last(states, last)
        total = 0.09 + log_variance[:, 1].double().exp()
        expected = torch.exp(-0.5 * (mean[:, 1].double() - 0.5) ** 2 / total)
        torch.testing.assert_close(steering.acceptance(states, last), expected)
        on_target = Steering(head, torch.tensor([1]), mean[:1, 1].double(), 0.3)
        assert on_target.acceptance(states[:1], last[:1]).item() == pytest.approx(1.0)


def test_rows_are_refused_at_the_rate_the_acceptance_gives():
    """Over 20,000 draws of one state, the refused share is 1 - a within four binomial deviations."""
    head = PropertyHead(8, 1)
    states = torch.randn(1, 1, 8, generator=torch.Generator().manual_seed(2)).expand(20_000, -1, -1)
    last = torch.zeros(20_000, dtype=torch.long)
    with torch.no_grad():
        mean = head.last(states[:1], last[:1])[0][0, 0].double()
        steering = Steering(head, torch.tensor([0]), (mean + 0.4).unsqueeze(0), 0.25)
        keep = steering.acceptance(states[:1], last[:1]).item()
        refused = steering.rejected(states, last, torch.Generator().manual_seed(0)).double().mean().item()
    assert 0.05 < keep < 0.95  # a rate that could be missed either way
    assert refused == pytest.approx(1 - keep, abs=4 * math.sqrt(keep * (1 - keep) / 20_000))


def test_the_property_head_loss_is_the_gaussian_nll_of_the_known_values_at_the_positions_read():
    head = _head_with_shares(8, 2, seed=1)
    states = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1))
    read = torch.tensor([[True, True, False, False], [True, True, True, True], [True, True, True, False]])
    properties = torch.tensor([[1.0, math.nan], [math.nan, math.nan], [0.0, -2.0]])
    with torch.no_grad():
        mean, log_variance = head(states, read)
        known = ~properties.isnan().unsqueeze(1) & read.unsqueeze(-1)
        target = properties.unsqueeze(1).expand_as(mean)
        error = (target[known] - mean[known]) ** 2
        expected = (0.5 * (log_variance[known] + error / log_variance[known].exp())).mean()
        assert known.sum() == 2 + 3 * 2  # row 0: two positions, one column; row 2: three, both
        assert head.nll(states, read, properties).item() == pytest.approx(expected.item(), rel=1e-6)
        assert head.nll(states, read, torch.full((3, 2), math.nan)).item() == 0.0


def test_the_encoder_gets_a_fixed_share_of_the_property_heads_gradient():
    head = _head_with_shares(8, 1, seed=3)
    properties = torch.tensor([[0.5], [-1.0], [2.0]])
    read = torch.ones(3, 4, dtype=torch.bool)
    states = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)
    head.nll(states, read, properties).backward()
    reference = states.detach().clone().requires_grad_(True)
    mean, log_variance = head(reference, read)
    target = properties.unsqueeze(1)
    (0.5 * (log_variance + (target - mean) ** 2 / log_variance.exp())).mean().backward()
    torch.testing.assert_close(states.grad, ENCODER_GRADIENT * reference.grad)
    assert ENCODER_GRADIENT < 1


@pytest.fixture(scope="module")
def sharp_task():
    """A tiny draft-head model whose property head is sure of itself: it refuses most rows."""
    task = conditioned_task("head")
    with torch.no_grad():
        task.property_head.mlp[-1].bias[2:] = -8.0  # log variances
        # shares of every token: the cached and the re-encoding decoders must keep the same states
        torch.nn.init.normal_(task.property_head.contribution[-1].weight, generator=torch.Generator().manual_seed(7))
    return task


def test_steered_rows_take_back_their_ends_and_write_on_from_their_own_prefixes(sharp_task):
    """A refused row backs out of its [SEP] from the states and cache it kept: decoding with the
    cache and without it (re-encoding its prefix) draws the same samples."""
    steered = sharp_task.guided({"logp": 4.0}, 1.5, steering=0.1)
    cached = generate(steered, 24, seed=3)
    assert cached == generate(steered, 24, SamplingConfig(cache=False), seed=3)
    guided = generate(sharp_task.guided({"logp": 4.0}, 1.5, steering=0), 24, seed=3)
    assert cached != guided  # rows were refused and written again


def test_steering_counts_its_own_rewinds_and_leaves_the_dead_ends_theirs(sharp_task, monkeypatch):
    """Each row is taken back at most ``STEERING_REWINDS`` times, and those are not counted against
    the rewinds its dead ends may need: without the SMILES rules there is no dead end, and no
    rewind of a dead end is counted however often steering takes rows back."""
    decoders = kept_decoders(monkeypatch)
    generate(sharp_task.guided({"logp": 4.0}, 1.5, steering=0.1), 24, SamplingConfig(syntax=False), seed=3)
    steered, rewinds = decoders[0].steered, decoders[0].rewinds
    assert steered.max() == speculative.STEERING_REWINDS  # the sharp head refuses rows to the limit
    assert not rewinds.any()


def test_without_guidance_steering_reads_the_finished_rows_in_a_pass_of_its_own(sharp_task):
    steered = generate(sharp_task.guided({"logp": 4.0}, 0.0, steering=0.1), 24, seed=3)
    plain = generate(sharp_task.guided({"logp": 4.0}, 0.0, steering=0), 24, seed=3)
    assert steered != plain
    uncached = generate(sharp_task.guided({"logp": 4.0}, 0.0, steering=0.1), 24, SamplingConfig(cache=False), seed=3)
    assert steered == uncached


def test_rows_on_target_are_kept_as_written_and_each_judgement_is_counted():
    """A head sure that every molecule has the target logP refuses nothing and draws nothing: the
    samples are guidance's own. At w = 0 each row's one judgement is a pass of its own (one more
    evaluation per row); at w > 0 it reads the guided call's unconditional half (none)."""
    task = conditioned_task("head")
    target = task.condition_vector({"logp": 4.0})[0]
    with torch.no_grad():
        task.property_head.mlp[-1].weight[:2] = 0.0
        task.property_head.mlp[-1].bias[:2] = torch.stack([target, torch.zeros(())])
    for scale, judgement in ((0.0, 1), (1.5, 0)):
        steered = generate(task.guided({"logp": 4.0}, scale, steering=0.25), 24, seed=3)
        plain = generate(task.guided({"logp": 4.0}, scale, steering=0), 24, seed=3)
        assert steered == plain
        assert torch.equal(steered.nfe, plain.nfe + judgement)


def test_a_condition_steers_by_default_where_it_can(sharp_task):
    default = generate(sharp_task.guided({"logp": 4.0}, 1.5), 24, seed=3)
    assert default == generate(sharp_task.guided({"logp": 4.0}, 1.5, steering=0.25), 24, seed=3)
    assert sharp_task.guided({"logp": 4.0}, 0.0).steering is not None


def test_steering_without_a_condition_is_refused(sharp_task):
    for width in (0.5, 0.0):  # 0 too: without a condition there is no steering to turn off
        with pytest.raises(ValueError, match="needs a condition"):
            sharp_task.guided(None, 0.0, steering=width)


def test_steering_needs_a_property_head():
    for width in (0.5, 0.0):
        with pytest.raises(ValueError, match="no property head"):
            conditioned_task("windows").guided({"logp": 4.0}, 1.0, steering=width)


def test_steering_is_refused_where_the_decoder_cannot_steer(sharp_task):
    steered = sharp_task.guided({"logp": 4.0}, 1.0, steering=0.5)
    with pytest.raises(ValueError, match=r"only speculative decoding.*: give no steering width, 0 included"):
        generate(steered, 4, length=5, seed=0)
    # asked for nothing, a fixed length samples with guidance alone
    assert len(generate(sharp_task.guided({"logp": 4.0}, 1.0), 4, length=5, seed=0)) == 4


def test_a_checkpoint_from_before_the_property_head_loads_and_refuses_to_steer():
    task = conditioned_task("head")
    state = {k: v for k, v in task.state_dict().items() if not k.startswith("property_head.")}
    checkpoint = {"state_dict": state}
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"])  # strict: the head's keys were filled in
    assert task.guided({"logp": 4.0}, 1.0).steering is None
    with pytest.raises(ValueError, match="before its property head was trained"):
        task.guided({"logp": 4.0}, 1.0, steering=0.5)


def test_a_head_from_before_the_sum_over_the_prefix_loads_and_steers_as_it_did():
    task = conditioned_task("head")
    state = {k: v for k, v in task.state_dict().items() if not k.startswith("property_head.contribution.")}
    checkpoint = {"state_dict": state}
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"])
    assert not task.property_head.contribution[-1].weight.any()
    assert task.guided({"logp": 4.0}, 1.0).steering is not None


def test_a_row_whose_rewrite_ends_at_a_dead_end_keeps_the_molecule_steering_took_back(sharp_task, monkeypatch):
    """With no rewind for a dead end, a rewrite that meets one ends there, not a molecule: the row
    writes the last finished molecule steering refused instead (it wrote the dead end's text)."""
    monkeypatch.setattr(speculative, "MAX_REWINDS", 0)
    decoders = kept_decoders(monkeypatch)
    samples = generate(sharp_task.guided({"logp": 4.0}, 1.5, steering=0.1), 24, seed=3)
    (decoder,) = decoders
    rescued = (decoder.forced & (decoder.steered > 0)).nonzero().squeeze(-1).tolist()
    assert rescued  # rows that would have ended as the dead end left them
    ended_there = sharp_task.tokenizer.batch_decode(decoder.x[rescued], skip_special_tokens=True)
    for row, text in zip(rescued, ended_there, strict=True):
        assert Chem.MolFromSmiles(samples[row]) is not None, samples[row]
        assert samples[row] != text.replace(" ", "")
