"""Prefix decoding of block models: several tokens per model call, each held to the SMILES constraints."""

import pytest
import torch

from polydiff.diffusion import DiffusionConfig
from polydiff.model.bert_diffusion import ModelConfig
from polydiff.sampling import SamplingConfig, generate
from polydiff.sampling.constraints.kekulization import MoleculePrefix
from polydiff.sampling.constraints.syntax import SmilesSyntax
from polydiff.tasks.diffusion_task import DiffusionTask

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=40)
TOKENS = ["C", "c", "O", "N", "n", "(", ")", "1", "2", "=", "[SEP]"]


@pytest.fixture(scope="module")
def task() -> DiffusionTask:
    """An untrained B = 4 SMILES model made sure of tokens that often break the rules (')', '1', '=')."""
    torch.manual_seed(0)
    task = DiffusionTask(model_config=TINY, diffusion_config=DiffusionConfig(block_size=4)).eval()
    ids = task.tokenizer.convert_tokens_to_ids(TOKENS)
    task.token_histogram[ids] = 1.0
    bias = dict(zip(TOKENS, [3.0, 2.0, 1.0, 1.0, 1.0, 1.5, 3.0, 2.5, 1.0, 2.5, 1.0], strict=True))
    with torch.no_grad():
        for token, value in bias.items():
            task.output_projection[-1].bias[task.tokenizer.convert_tokens_to_ids(token)] += value
    return task


def replay(task: DiffusionTask, smiles: str) -> tuple[bool, bool]:
    """(every token kept the prefix completable, the string may end where it does), token by token."""
    syntax = SmilesSyntax(task.tokenizer)
    state, prefix = syntax.start(1, torch.device("cpu")), MoleculePrefix()
    for token in task.tokenizer(smiles, add_special_tokens=False)["input_ids"]:
        if not syntax.allowed(state)[0, token]:
            return False, False
        state, prefix = syntax.advance(state, torch.tensor([token])), prefix.then(syntax.tokens[token])
        if not prefix.can_complete():
            return False, False
    return True, bool(syntax.allowed(state)[0, task.tokenizer.sep_token_id])


def test_every_committed_prefix_keeps_to_the_rules(task):
    generation = generate(task, 48, SamplingConfig(threshold=0.02), seed=0)
    replayed = [replay(task, smiles) for smiles in generation]
    assert all(kept for kept, _ in replayed)
    # Drafts were committed in parallel: fewer calls than tokens ([SEP] included) in the rows that ended.
    ended = torch.tensor([end for _, end in replayed])
    assert ended.sum() >= 12
    assert generation.nfe[ended].sum() < (generation.lengths[ended] + 1).sum()


def test_without_constraints_the_same_drafts_break_the_rules(task):
    free = generate(task, 48, SamplingConfig(threshold=0.02, syntax=False), seed=0)
    assert sum(not replay(task, smiles)[0] for smiles in free) >= 24


def test_the_threshold_trades_calls_for_tokens(task):
    one = generate(task, 32, SamplingConfig(threshold=1.0), seed=0)
    many = generate(task, 32, SamplingConfig(threshold=0.02), seed=0)
    ended = one.lengths < TINY.max_position_embeddings - 1
    assert torch.equal(one.nfe[ended], one.lengths[ended] + 1)  # threshold 1: one token per call
    assert (many.nfe.float() / (many.lengths + 1)).mean() < 0.75 * (one.nfe.float() / (one.lengths + 1)).mean()


def test_a_block_model_ends_its_sequences_by_prefix_decoding_by_default(task):
    generation = generate(task, 16, seed=1)
    assert (generation.lengths < TINY.max_position_embeddings - 1).any()
    assert all(replay(task, smiles)[0] for smiles in generation)


def test_a_rewound_row_stands_where_it_stood_before_those_tokens(task):
    """``Committer.rewind`` gives a row the automaton state and molecule prefix of its tokens before
    the position it goes back to, as if it had never written the rest."""
    from polydiff.sampling.blockwise import Committer

    ids = [task.tokenizer.convert_tokens_to_ids(t) for t in task.tokenizer.tokenize("CC(=O)c1ccc(N)cc1")]
    syntax = SmilesSyntax(task.tokenizer)
    x = torch.full((2, len(ids) + 2), task.tokenizer.mask_token_id)
    full, short = Committer(x.clone(), syntax), Committer(x.clone(), syntax)
    rows = torch.tensor([0, 1])
    for position, token in enumerate(ids, start=1):
        full.commit(rows, torch.tensor([position, position]), torch.tensor([token, token]))
        if position < 7:
            short.commit(rows, torch.tensor([position, position]), torch.tensor([token, token]))
    full.rewind(torch.tensor([1]), torch.tensor([7]))  # row 1 takes back "c1ccc(N)cc1" but its first "c"
    assert full.state.ids[1] == short.state.ids[1] != full.state.ids[0]  # one automaton: one id per state
    assert full.prefixes[1] == short.prefixes[1] and full.prefixes[0] != short.prefixes[0]
    assert torch.equal(full.allowed(rows[1:], torch.tensor([7])), short.allowed(rows[1:], torch.tensor([7])))


def test_a_template_the_rules_cannot_fill_ends_short_with_a_warning_and_its_true_length():
    torch.manual_seed(0)
    config = DiffusionConfig(block_size=4, causal_context=True)
    polymer = DiffusionTask(model_config=TINY, diffusion_config=config, kind="polymer").eval()
    # Three positions cannot hold a polymer unit's two * after a ring closed on N (C(*)* takes four),
    # which the rules' count of the tokens still needed, a lower bound, does not see (two are refused before).
    with pytest.warns(UserWarning, match="2 of 2 samples end short of their fixed length, invalid"):
        short = generate(polymer, 2, prompts="O=C1CCCN1[MASK][MASK][MASK]", seed=0)
    assert list(short) == ["O=C1CCCN1"] * 2 and short.lengths.tolist() == [9, 9]  # what was written
    filled = generate(polymer, 2, prompts="O=C1CCCN1[MASK][MASK][MASK][MASK][MASK]", seed=0)
    assert all(s.startswith("O=C1CCCN1") and s.count("*") == 2 for s in filled), list(filled)


def test_a_template_or_length_too_short_for_any_sequence_is_refused_before_sampling():
    torch.manual_seed(0)
    config = DiffusionConfig(block_size=4, causal_context=True)
    polymer = DiffusionTask(model_config=TINY, diffusion_config=config, kind="polymer").eval()
    # Rows that could only end short, empty or invalid, are refused by the rules' count of what is still needed.
    with pytest.raises(ValueError, match=r"prompt '\[MASK\]': 1 \[MASK\] cannot finish as a repeat unit"):
        generate(polymer, 2, prompts="[MASK]", seed=0)
    with pytest.raises(ValueError, match=r"1 \[MASK\] cannot finish '\[\*\]CC\(C' as a repeat unit .*: give more"):
        generate(polymer, 2, prompts="[*]CC(C[MASK]", seed=0)  # *CC(C*) takes two
    with pytest.raises(ValueError, match=r"2 \[MASK\]s cannot finish 'O=C1CCCN1' as a repeat unit"):
        generate(polymer, 2, prompts="O=C1CCCN1[MASK][MASK]", seed=0)  # N has one bond left, for one *
    with pytest.raises(ValueError, match=r"length 2 is too short to write a repeat unit"):
        generate(polymer, 2, length=2, seed=0)  # *C* is the shortest
    shortest = generate(polymer, 2, length=3, seed=0)  # an untrained model's: [*:1][Si][*:2], say
    assert shortest.lengths.tolist() == [3, 3] and all(s.count("*") == 2 for s in shortest), list(shortest)
    molecule = DiffusionTask(model_config=TINY, diffusion_config=config).eval()
    with pytest.raises(ValueError, match=r"1 \[MASK\] cannot finish 'C1CC\(C' as a molecule \(every ring and branch"):
        generate(molecule, 2, prompts="C1CC(C[MASK]", seed=0)
    assert all(s.startswith("C1CC(C") for s in generate(molecule, 2, prompts="C1CC(C[MASK][MASK]", seed=0))
