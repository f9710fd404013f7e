"""Fragment-constrained generation: fixed fragments written as given, holes filled by the model."""

import pytest
import torch
from test_blockwise import replay  # sibling modules: pytest puts this folder on the path
from test_speculative import causal_task, cycles_left

from polydiff.chem.fragments import fragment_template, keeps_fragments
from polydiff.chem.molecules import parse
from polydiff.diffusion import DiffusionConfig
from polydiff.model.bert_diffusion import ModelConfig
from polydiff.sampling import SamplingConfig, generate
from polydiff.sampling import fragments as fragment_decoding
from polydiff.tasks.diffusion_task import DiffusionTask

ALIPHATIC = ["C", "N", "O", "(", ")", "1", "2", "=", "[SEP]"]


@pytest.fixture(scope="module")
def task() -> DiffusionTask:
    """An untrained model with a causal context that writes aliphatic SMILES tokens, sure of a few."""
    return causal_task(ALIPHATIC, {"C": 2.0, "(": 1.0, ")": 1.0, "1": 1.0, "[SEP]": 0.5})


# C(=[*])C: a [*] on a double bond keeps it (the substituent is =C, =N or =O).
@pytest.mark.parametrize(
    "request_",
    ["[*]C1CCOCC1", "OC(CC[*])C[*]", "OC1CC([*])CC(O)C1", "[*]C(=O)O.[*]N1CCCC1", "C(=[*])C", "N#C[*]", "[*]C(O)(C)C"],
)
def test_every_sample_keeps_to_the_rules_and_every_ended_one_keeps_its_fragments(task, request_):
    """Whatever the (untrained) model draws: every committed prefix keeps to the SMILES rules, the
    fixed text comes first, and each valid sample has the fragments on atoms of their own and at
    least one new atom per hole."""
    result = generate(task, 48, fragments=request_, seed=1)
    template = fragment_template(request_)
    fixed = sum(atom.GetAtomicNum() > 0 for part in request_.split(".") for atom in parse(part).GetAtoms())
    valid = 0
    for sample in result:
        kept, _ = replay(task, sample)
        assert kept and (sample == "" or sample.startswith(template.pieces[0])), sample  # "": given up
        if parse(sample) is not None:
            valid += 1
            assert keeps_fragments(sample, request_.split(".")), sample
            assert parse(sample).GetNumHeavyAtoms() >= fixed + len(template.holes)
    assert valid >= 36  # an untrained model, aliphatic tokens: most rows end as molecules
    assert len(set(result)) >= 24  # the holes are sampled, not fixed
    # Only the free tokens cost model calls: one each, plus what the rewinds write again (4, 8, 16,
    # ... tokens, never more than the row's positions) and the call that found each dead end, and
    # the last one.
    fixed_tokens = sum(len(piece) for piece in template.pieces)  # here every character is one token
    width = task.max_positions
    rewritten = sum(min(fragment_decoding.REWIND * 2**k, width) for k in range(fragment_decoding.MAX_REWINDS))
    complete = torch.tensor([parse(sample) is not None for sample in result])
    bound = result.lengths[complete] + 1 - fixed_tokens + rewritten + fragment_decoding.MAX_REWINDS + 1
    assert (result.nfe[complete] <= bound).all()


def test_more_samples_than_a_batch_holds_are_written_a_batch_at_a_time(task):
    """A model whose own decoding streams its samples through one batch (speculative) still writes
    fragments batch by batch: every sample is written, with its fragments, by model calls."""
    request_ = "[*]C1CCOCC1"
    result = generate(task, 10, fragments=request_, batch_size=4, seed=1)
    assert len(result) == len(result.nfe) == len(result.lengths) == 10
    head = fragment_template(request_).pieces[0]
    assert all(sample.startswith(head) for sample in result if sample)
    assert sum(parse(sample) is not None for sample in result) >= 7
    assert (result.nfe > 0).all()


def test_fragments_leave_no_cycles_that_grow_with_the_batches(task):
    """Decoding pauses the garbage collector; what the fragment decoder leaves for it does not grow
    with the batches (a pad's prefix kept among its own children did, per row)."""
    options = {"fragments": "[*]C1CCOCC1", "batch_size": 4}
    assert cycles_left(task, 12, **options) <= cycles_left(task, 4, **options)


def test_a_hole_inside_a_ring_touches_none_of_the_fragments_open_ring_labels(task):
    """``C1C(O)CC(<hole>)CC1O``: ring label 1 is the fragment's while the hole is written."""
    request_ = "OC1CC([*])CC(O)C1"
    head, tail = fragment_template(request_).pieces
    assert head.count("1") == 1  # the ring is open around the hole
    for sample in generate(task, 48, fragments=request_, seed=2):
        if sample.endswith(tail):
            assert "1" not in sample[len(head) : -len(tail)], sample


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"length": 20}, "no prompt or length"),
        ({"config": SamplingConfig(cache=False)}, "cache"),
        ({"config": SamplingConfig(strategy="prefix")}, "strategy"),
    ],
)
def test_options_fragments_do_not_use_are_refused(task, options, message):
    with pytest.raises(ValueError, match=message):
        generate(task, 2, fragments="[*]C1CCOCC1", **options)


def test_fragments_need_a_model_that_predicts_the_next_token():
    torch.manual_seed(0)
    tiny = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=40)
    whole = DiffusionTask(model_config=tiny, diffusion_config=DiffusionConfig(block_size=0)).eval()
    with pytest.raises(ValueError, match="predicts the next token"):
        generate(whole, 2, fragments="[*]C1CCOCC1")
    ar = DiffusionConfig(block_size=1)
    polymer = DiffusionTask(model_config=tiny, diffusion_config=ar, kind="polymer").eval()
    with pytest.raises(ValueError, match="for molecule models; this is a polymer model"):
        generate(polymer, 2, fragments="[*]C1CCOCC1")
    selfies = DiffusionTask(model_config=tiny, diffusion_config=ar, representation="selfies").eval()
    with pytest.raises(ValueError, match="need a model of SMILES; this one writes selfies"):
        generate(selfies, 2, fragments="[*]C1CCOCC1")


def test_fragments_with_tokens_the_model_does_not_know_are_refused(task):
    # Named in the text RDKit wrote the fragment as, where a [CH2] the user never wrote may stand,
    # said apart. (RDKit 2024.03 writes it C[Tc], later ones [CH2][Tc].)
    known_apart = r"\['\[Tc\]'\](; and, as RDKit writes the fragments, \['\[CH2\]'\])?"
    with pytest.raises(ValueError, match=rf"does not know: {known_apart} \(in '(C|\[CH2\])\[Tc\]', as RDKit"):
        generate(task, 2, fragments="[*]C[Tc]")


def test_fragments_longer_than_the_model_writes_are_refused(task):
    # 40 positions: [CLS], [SEP] and 38 tokens. A chain of n carbons is written C(CC..)C around its
    # hole: n + 2 tokens, and one atom in the hole.
    assert task.max_positions == 40
    (sample,) = generate(task, 1, fragments="C" * 35 + "[*]", seed=0)
    assert len(task.tokenizer.tokenize(sample)) == 38 and keeps_fragments(sample, ["C" * 35 + "[*]"])
    with pytest.raises(ValueError, match="take 39 tokens with an atom in each"):
        generate(task, 1, fragments="C" * 36 + "[*]")
