"""Classifier-free guidance toward property targets, and the conditions a checkpoint accepts."""

import math

import pytest
import torch
from test_blockwise import TOKENS  # a sibling module: pytest puts this folder on the path

from polydiff.diffusion import DiffusionConfig
from polydiff.diffusion.blocks import sampling_mask
from polydiff.model.bert_diffusion import ModelConfig
from polydiff.sampling import SamplingConfig, generate
from polydiff.sampling.guidance import GuidedDenoiser, parse_condition
from polydiff.tasks.diffusion_task import DiffusionTask

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=40)


def conditioned_task(drafter: str = "windows") -> DiffusionTask:
    """An untrained B = 4 model with a causal context, conditioned on logP and QED."""
    torch.manual_seed(0)
    config = DiffusionConfig(block_size=4, causal_context=True, drafter=drafter)
    task = DiffusionTask(model_config=TINY, diffusion_config=config, conditions=["logp", "qed"]).eval()
    task.token_histogram[task.tokenizer.convert_tokens_to_ids(TOKENS)] = 1.0
    # mean, std, min, max of each property, as fit would store them
    task.condition_statistics.copy_(torch.tensor([[2.0, 0.7], [1.0, 0.1], [-1.0, 0.3], [5.0, 0.95]]))
    with torch.no_grad():  # an untrained condition embedding is near zero: make it matter
        task.model.condition_embedding.mlp[-1].weight.mul_(50.0)
    return task


@pytest.fixture(scope="module")
def task() -> DiffusionTask:
    return conditioned_task()


def test_guided_logits_push_the_conditional_away_from_the_unconditional(task):
    """log p_w = log p(x | c) + w (log p(x | c) - log p(x)), from one pass over twice the rows."""
    x = torch.tensor([[task.tokenizer.cls_token_id, *task.tokenizer.convert_tokens_to_ids(["C", "C", "O", "N"])]] * 3)
    content = torch.ones_like(x, dtype=torch.bool)
    content[:, 0] = False
    mask = sampling_mask(content, ~content, 1)
    condition = task.condition_vector({"logp": 4.0})
    guided = GuidedDenoiser(task, condition, scale=2.0)
    with torch.no_grad():
        logits = guided.logits_from_hidden(guided.encode(x, mask))
        given = task.logits_from_hidden(task.encode(x, mask, condition=condition.expand(3, -1))).log_softmax(-1)
        free = task.logits_from_hidden(task.encode(x, mask)).log_softmax(-1)
    assert torch.allclose(logits, given + 2.0 * (given - free), atol=1e-5)
    assert not torch.allclose(given, free, atol=1e-3)  # the condition changes the prediction


def test_guided_samples_are_the_same_with_and_without_the_cache_and_count_two_evaluations(task):
    guided = task.guided({"logp": 4.0, "qed": 0.9}, 1.5)
    cached = generate(guided, 24, seed=3)
    uncached = generate(guided, 24, SamplingConfig(cache=False), seed=3)
    assert cached == uncached
    plain = generate(task.guided({"logp": 4.0, "qed": 0.9}, 0.0), 24, seed=3)
    assert (cached.nfe % 2 == 0).all() and cached.nfe.min() >= 2
    assert plain != cached  # guidance changes what is drawn


def test_a_draft_head_drafts_both_halves_of_a_guided_call():
    """The conditional and unconditional causal states each get their own drafts, side by side as
    the head reads them; guided speculative decoding with the head draws the same with the cache."""
    task = conditioned_task("head")
    guided = task.guided({"logp": 4.0}, 1.5)
    context, masks = torch.randn(3, 2, 64), torch.full((3, 2, 4), task.tokenizer.mask_token_id)
    with torch.no_grad():
        drafts = guided.draft(context, masks)
        halves = [task.draft(half, masks) for half in context.chunk(2, -1)]
    torch.testing.assert_close(drafts, torch.cat(halves, -1))
    cached = generate(guided, 24, seed=3)
    assert cached == generate(guided, 24, SamplingConfig(cache=False), seed=3)
    assert (cached.nfe % 2 == 0).all()


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({"mw": 300.0}, "unknown property 'mw'"),
        ({"logp": 30.0}, "logp=30 lies outside what this checkpoint was trained on"),
        ({"qed": -0.5}, "qed=-0.5 lies outside"),
        # Within one standard deviation of the training maximum (0.95 + 0.1), but past what QED can be.
        ({"qed": 1.03}, r"qed=1.03 lies outside .* beyond, within what it can take \(0.2 to 1\)"),
    ],
)
def test_a_condition_the_checkpoint_cannot_take_is_refused(task, targets, message):
    with pytest.raises(ValueError, match=message):
        task.condition_vector(targets)


def test_targets_a_little_past_the_training_range_are_allowed_and_others_left_free(task):
    vector = task.condition_vector({"logp": 5.5})  # max 5 plus one standard deviation: 6
    assert task.condition_vector({"qed": 1.0})[1].item() == pytest.approx((1.0 - 0.7) / 0.1)  # QED's own top
    assert vector[0].item() == pytest.approx((5.5 - 2.0) / 1.0) and math.isnan(vector[1])


def test_an_unconditioned_checkpoint_cannot_be_guided():
    plain = DiffusionTask(model_config=TINY)
    with pytest.raises(ValueError, match="trained without conditions"):
        plain.guided({"logp": 3.0}, 1.0)
    for scale in (1.0, 0.0):  # given, even at no guidance, it asks for something that is not there
        with pytest.raises(ValueError, match="needs a condition"):
            plain.guided(None, scale)
    assert plain.guided(None) is plain


@pytest.mark.parametrize("text", ["logp", "logp=", "=3", "logp=3,logp=4", "logp=inf", "logp=3;qed=0.8"])
def test_a_malformed_condition_is_refused(text):
    with pytest.raises(ValueError, match=r"--condition|twice"):
        parse_condition(text)


def test_a_comma_too_many_is_said_to_be():
    with pytest.raises(ValueError, match=r"got an empty pair in 'logp=3,' \(a comma too many\?\)"):
        parse_condition("logp=3,")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "Infinity"])
def test_a_target_that_is_no_finite_number_is_said_to_be(value):
    with pytest.raises(ValueError, match=f"--condition logp={value}: a target is a finite number"):
        parse_condition(f"logp={value}")


def test_a_condition_is_read_as_name_value_pairs():
    assert parse_condition(" logp = 3 , qed=0.8") == {"logp": 3.0, "qed": 0.8}


def test_a_condition_names_a_polymer_class_with_a_word():
    assert parse_condition("class=polyamide, logp=2") == {"class": "polyamide", "logp": 2.0}


@pytest.fixture(scope="module")
def polymer_task() -> DiffusionTask:
    """An untrained polymer model conditioned on logP and the class, whose statistics say it saw
    about 5,000 polyamides and 200 polyimides."""
    task = DiffusionTask(model_config=TINY, kind="polymer", conditions=["logp", "class"]).eval()
    columns = task.condition_columns
    statistics = torch.zeros(4, len(columns))
    statistics[:, 0] = torch.tensor([2.0, 1.0, -1.0, 5.0])
    statistics[1, 1:] = 1.0
    statistics[3, columns.index("class=polyamide")] = 5_000
    statistics[3, columns.index("class=polyimide")] = 200
    task.condition_statistics.copy_(statistics)
    return task


def test_a_class_condition_is_one_hot_and_leaves_the_rest_free(polymer_task):
    vector = polymer_task.condition_vector({"class": "polyamide"})
    columns = polymer_task.condition_columns
    assert vector[columns.index("class=polyamide")] == 1.0 and math.isnan(vector[0])
    assert vector[1:].sum() == 1.0  # the other classes are known to be 0


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({"class": "polyketone"}, "unknown class 'polyketone': choose from polyamide"),
        ({"class": "polyimide"}, "about 200 such sequences, fewer than 1,000"),
        ({"logp": "high"}, "logp takes a number"),
        ({"class": 3.0}, "class takes a category's name, not a number: choose from polyamide"),
        ({}, "condition names no property"),  # all free would be the unconditional model at twice the calls
    ],
)
def test_a_class_the_checkpoint_saw_too_little_of_is_refused(polymer_task, targets, message):
    with pytest.raises(ValueError, match=message):
        polymer_task.condition_vector(targets)


def test_a_class_condition_needs_a_polymer_model():
    with pytest.raises(ValueError, match="needs kind: polymer"):
        DiffusionTask(model_config=TINY, conditions=["class"])


def test_a_condition_written_as_the_command_lines_string_is_refused_from_python(polymer_task):
    with pytest.raises(TypeError, match="condition takes a mapping such as"):
        polymer_task.condition_vector("logp=3")
