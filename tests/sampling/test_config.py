"""Every sampling option either changes the samples of the model at hand or is refused with one line."""

import pytest
import torch

from polydiff.diffusion import DiffusionConfig
from polydiff.model.bert_diffusion import ModelConfig
from polydiff.sampling import SamplingConfig, generate
from polydiff.tasks.diffusion_task import DiffusionTask

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=32)


def tiny_task(
    block_size: int, representation: str = "smiles", causal_context: bool = False, drafter: str = "head"
) -> DiffusionTask:
    torch.manual_seed(0)
    config = DiffusionConfig(block_size=block_size, causal_context=causal_context, drafter=drafter)
    task = DiffusionTask(model_config=TINY, diffusion_config=config, representation=representation).eval()
    task.length_histogram[4:8] = 1
    return task


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        SamplingConfig(64, "ancestral")  # two positional fields a reorder would silently swap


@pytest.mark.parametrize(
    "option",
    [{"steps": 16}, {"strategy": "ancestral"}, {"randomness": 0.5}, {"threshold": 0.5}],
    ids=str,
)
def test_one_token_blocks_refuse_the_reverse_process_options(option):
    with pytest.raises(ValueError, match=f"{next(iter(option))}: a model with one-token blocks"):
        generate(tiny_task(1), 2, SamplingConfig(**option), seed=0)


@pytest.mark.parametrize(
    ("block_size", "representation", "kwargs"),
    [
        (0, "smiles", {}),
        (2, "smiles", {"strategy": "confidence"}),
        (1, "selfies", {}),
        (1, "smiles", {"prompts": ["[MASK]CO"]}),
        (2, "smiles", {"length": 5}),
    ],
    ids=["whole-sequence", "blocks-by-confidence", "selfies", "fixed-token-after-a-mask", "blocks-at-fixed-length"],
)
def test_syntax_is_refused_where_no_constraint_applies(block_size, representation, kwargs):
    length, prompts = kwargs.pop("length", None), kwargs.pop("prompts", None)
    with pytest.raises(ValueError, match="syntax: the constraints apply"):
        task = tiny_task(block_size, representation)
        generate(task, 2, SamplingConfig(syntax=False, **kwargs), length=length, prompts=prompts, seed=0)


def test_prefix_decoding_refuses_the_reverse_process_options_and_needs_a_block_model_that_ends_itself():
    with pytest.raises(ValueError, match="steps: prefix decoding makes one model call per committed run"):
        generate(tiny_task(4), 2, SamplingConfig(steps=2), seed=0)
    with pytest.raises(ValueError, match="cache: prefix decoding re-encodes its current block"):
        generate(tiny_task(4), 2, SamplingConfig(cache=False), seed=0)
    for block_size, length in ((0, None), (4, 6)):
        with pytest.raises(ValueError, match="strategy prefix: it decodes block models without a causal context"):
            generate(tiny_task(block_size), 2, SamplingConfig(strategy="prefix"), length=length, seed=0)
    with pytest.raises(ValueError, match="strategy prefix: it decodes block models without a causal context"):
        generate(tiny_task(4, causal_context=True), 2, SamplingConfig(strategy="prefix"), seed=0)


def test_speculative_decoding_is_the_default_of_a_causal_context_and_needs_one():
    task = tiny_task(4, causal_context=True)
    with pytest.raises(ValueError, match="steps: speculative decoding makes one model call per committed run"):
        generate(task, 2, SamplingConfig(steps=2), seed=0)
    with pytest.raises(ValueError, match="threshold: it decides what prefix decoding commits"):
        generate(task, 2, SamplingConfig(threshold=0.5), seed=0)
    assert SamplingConfig().for_model(4, True, True, causal_context=True).strategy == "speculative"
    for block_size, length in ((4, None), (0, None)):
        with pytest.raises(ValueError, match="strategy speculative: it decodes block models with a causal context"):
            generate(tiny_task(block_size), 2, SamplingConfig(strategy="speculative"), length=length, seed=0)
    windows = tiny_task(4, causal_context=True, drafter="windows")
    with pytest.raises(ValueError, match="strategy speculative: it decodes block models with a causal context"):
        generate(windows, 2, SamplingConfig(strategy="speculative"), length=6, seed=0)
    # A draft head only drafts: at a fixed length its model writes one token per call, with no strategy to pick.
    with pytest.raises(ValueError, match="strategy: at a fixed length, a draft head's model makes one model call"):
        generate(task, 2, SamplingConfig(strategy="speculative"), length=6, seed=0)
    # Nor can its encoder, which learnt only the next token, denoise a block by another strategy.
    for strategy in ("confidence", "ancestral"):
        with pytest.raises(ValueError, match=f"strategy {strategy}: a draft head's model decodes speculatively only"):
            generate(task, 2, SamplingConfig(strategy=strategy), seed=0)
    assert len(generate(windows, 2, SamplingConfig(strategy="confidence"), seed=0)) == 2  # its encoder can


def test_threshold_belongs_to_prefix_decoding():
    with pytest.raises(ValueError, match="threshold: it decides what prefix decoding commits"):
        generate(tiny_task(0), 2, SamplingConfig(threshold=0.5), seed=0)


def test_randomness_needs_the_confidence_strategy():
    with pytest.raises(ValueError, match="randomness: it scales the confidence"):
        generate(tiny_task(0), 2, SamplingConfig(strategy="ancestral", randomness=0.5), seed=0)


def test_top_p_needs_a_temperature():
    with pytest.raises(ValueError, match="top_p: temperature 0"):
        generate(tiny_task(0), 2, SamplingConfig(temperature=0, top_p=0.5), seed=0)


def test_steps_beyond_the_block_size_are_refused_and_up_to_it_used():
    task = tiny_task(2)
    with pytest.raises(ValueError, match="steps: a block of 2 tokens takes at most 2 steps"):
        generate(task, 2, SamplingConfig(steps=3), length=6, seed=0)
    one, two = (generate(task, 8, SamplingConfig(steps=s), length=6, seed=0) for s in (1, 2))
    assert one.nfe.max() < two.nfe.max()  # one step per block is one call per block


def test_every_option_of_a_whole_sequence_model_is_used():
    task = tiny_task(0)
    changed = dict(steps=4, strategy="ancestral", temperature=0.5, top_p=0.9, cache=False)
    default = generate(task, 8, SamplingConfig(), seed=0)
    for name, value in changed.items():
        other = generate(task, 8, SamplingConfig(**{name: value}), seed=0)
        assert (other, other.nfe.tolist()) != (default, default.nfe.tolist()), name
    assert generate(task, 8, SamplingConfig(randomness=0.0), seed=0) != default


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("temperature", -0.5, "temperature must be >= 0"),
        ("temperature", float("nan"), "temperature must be >= 0 and finite, got nan"),
        ("temperature", float("inf"), "temperature must be >= 0 and finite, got inf"),  # every logit 0: uniform
        ("randomness", float("nan"), "randomness must be >= 0, got nan"),
        ("top_p", float("nan"), r"top_p must lie in \(0, 1\], got nan"),
        ("threshold", 0.0, r"threshold must lie in \(0, 1\]"),
    ],
)
def test_values_outside_an_options_range_nan_included_are_refused(option, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**{option: value})


def test_an_option_asked_for_by_name_must_matter_even_at_its_default():
    # A block model of SMILES at a fixed length (no free end): no constraint applies.
    fixed_length = {"block_size": 4, "free_length": False, "smiles": True, "causal_context": True, "draft_head": True}
    assert SamplingConfig(syntax=True).for_model(**fixed_length).syntax is False  # the default, not asked for
    with pytest.raises(ValueError, match="syntax: the constraints apply to SMILES"):
        SamplingConfig.asked({"syntax", "seed"}, syntax=True).for_model(**fixed_length)
    free = fixed_length | {"free_length": True}
    assert SamplingConfig.asked({"syntax", "temperature"}, syntax=True).for_model(**free).syntax is True
    # Nothing fixed ahead of the tokens to write (a length, or a template that fixes a start): the
    # draft head's model writes them one per call, left to right, under the rules.
    suffix = fixed_length | {"fills_suffix": True}
    assert SamplingConfig(syntax=True).for_model(**suffix).syntax is True
    assert SamplingConfig.asked({"syntax"}, syntax=False).for_model(**suffix).syntax is False
    # A block model without a draft head fills a fixed length by its reverse process, in any order.
    with pytest.raises(ValueError, match="syntax: the constraints apply to SMILES"):
        SamplingConfig.asked({"syntax"}, syntax=True).for_model(**suffix | {"draft_head": False})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"syntax": "false"}, "syntax must be True or False, got 'false'"),  # a non-empty string would read as true
        ({"temperature": "0.8"}, "temperature must be a number, got '0.8'"),
        ({"steps": 2.0}, "steps must be an integer, got 2.0"),
        ({"cache": 1}, "cache must be True or False, got 1"),
    ],
    ids=["text for a bool", "text for a number", "float for an integer", "integer for a bool"],
)
def test_a_field_of_another_type_is_refused(options, message):
    with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(".", r"\.")):
        SamplingConfig(**options)
    assert SamplingConfig(temperature=1, top_p=1).temperature == 1  # an integer is a number


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_samples": "5"}, "num_samples must be an integer, got '5'"),
        ({"num_samples": True}, "num_samples must be an integer, got True"),
        ({"seed": "1"}, "seed must be an integer or None, got '1'"),
        ({"config": {"temperature": 0.8}}, "config must be a SamplingConfig"),
        ({"prompts": []}, "prompts must be a template or a non-empty list of them, got []"),
        ({"fragments": ["[*]C(=O)O", "[*]N1CCCC1"]}, "fragments must be one string, several joined by '.'"),
    ],
    ids=["text count", "bool count", "text seed", "dict config", "no prompts", "list of fragments"],
)
def test_generate_refuses_arguments_of_another_type_in_one_line(arguments, message):
    with pytest.raises(TypeError) as error:
        generate(tiny_task(4, causal_context=True), **({"num_samples": 2} | arguments))
    assert str(error.value).startswith(message)


def test_one_prompt_is_a_template_not_a_list_of_characters():
    task = tiny_task(1)
    one = generate(task, 2, prompts="CC[MASK][MASK]", seed=0, config=SamplingConfig(syntax=False))
    listed = generate(task, 2, prompts=["CC[MASK][MASK]"], seed=0, config=SamplingConfig(syntax=False))
    assert list(one) == list(listed) and all(s.startswith("CC") for s in one)
    assert generate(task, 1, seed=-5).seed == -5  # the seed as given, not read modulo 2**64
