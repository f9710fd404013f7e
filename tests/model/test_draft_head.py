"""The draft head: a block denoiser on the causal states that trains without touching the encoder."""

import pytest
import torch

from polydiff.diffusion import DiffusionConfig
from polydiff.model.bert_diffusion import ModelConfig
from polydiff.sampling import SamplingConfig, generate
from polydiff.tasks.diffusion_task import DiffusionTask

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=40)
MOLECULES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccccc1", "N#CC1CC1"]


@pytest.fixture
def task() -> DiffusionTask:
    torch.manual_seed(0)
    config = DiffusionConfig(block_size=4, causal_context=True, drafter="head", noisy_blocks=3)
    return DiffusionTask(model_config=TINY, diffusion_config=config)


def batch_of(task: DiffusionTask, molecules: list[str]) -> dict[str, torch.Tensor]:
    return dict(task.tokenizer(molecules, padding=True, return_tensors="pt"))


def gradients(task: DiffusionTask, loss: torch.Tensor) -> dict[str, bool]:
    task.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad is not None and bool(p.grad.abs().sum() > 0) for name, p in task.named_parameters()}


def test_the_draft_loss_trains_the_head_alone_and_the_next_token_loss_the_encoder(task):
    batch = batch_of(task, MOLECULES)
    _, masked, masked_nll, next_nll, _ = task._draft_windows(batch["input_ids"], batch["attention_mask"])
    assert masked.any() and masked_nll.shape == (int(masked.sum()),)
    assert not masked.view(len(MOLECULES), 3, 4)[..., 0].any()  # slot 0, the token just drawn, is given
    draft = gradients(task, masked_nll.sum())
    assert any(draft[name] for name in draft if name.startswith("model.draft_head."))
    assert not any(draft[name] for name in draft if not name.startswith("model.draft_head."))
    encoder = gradients(task, next_nll.sum())
    assert any(encoder[name] for name in encoder if name.startswith("model.bert."))
    assert not any(encoder[name] for name in encoder if name.startswith("model.draft_head."))


def test_the_bound_scores_the_blocks_of_one_cut_and_nothing_else(task):
    """Validation's bound: windows at the blocks of one cut (positions 1..B, B+1..2B, ...), so slot j
    stands for position 1 + j. Each block's first token is scored by the next-token prediction every
    time (weight 1), the others when masked; over many draws of t every content token is scored, and
    nothing else ever is."""
    batch = batch_of(task, MOLECULES)
    content = task.content(batch["input_ids"])
    generator = torch.Generator().manual_seed(0)
    scored = torch.zeros_like(content)
    with torch.no_grad():
        for _ in range(50):
            weight, masked, token_nll = task.masked_cross_entropy(batch, generator)
            assert torch.isfinite(token_nll).all() and (weight[masked] > 0).all()
            width = min(masked.shape[1], content.shape[1] - 1)
            assert not masked[:, width:].any()
            leading = content[:, 1 : 1 + width] & (torch.arange(width) % 4 == 0)
            assert torch.equal(masked[:, :width] & leading, leading) and (weight[:, :width][leading] == 1).all()
            scored[:, 1 : 1 + width] |= masked[:, :width]
    assert torch.equal(scored, content)


def test_a_template_is_filled_one_token_per_call_around_its_fixed_tokens(task):
    task.eval()
    with pytest.warns(UserWarning, match="this model writes left to right"):
        generation = generate(task, 6, SamplingConfig(), prompts=["C[MASK][MASK]O[MASK]"], seed=0)
    for smiles, calls in zip(generation, generation.nfe.tolist(), strict=True):
        tokens = task.tokenizer.tokenize(smiles)
        assert len(tokens) == 5 and tokens[0] == "C" and tokens[3] == "O"
        assert calls == 3
    with pytest.raises(
        ValueError, match="steps: at a fixed length, a draft head's model makes one model call per token"
    ):
        generate(task, 2, SamplingConfig(steps=2), length=6, seed=0)


def test_checkpoints_from_before_draft_heads_keep_their_windows():
    """A causal-context model saved before ``drafter`` existed drafted with the encoder's windows."""
    from dataclasses import asdict

    from polydiff.tasks.checkpoints import migrate_hyperparameters

    older = asdict(DiffusionConfig(block_size=4, causal_context=True))
    del older["drafter"]
    hparams = {"diffusion_config": older}
    assert migrate_hyperparameters(hparams) and hparams["diffusion_config"]["drafter"] == "windows"
    assert not migrate_hyperparameters(hparams)  # up to date now
    whole = {"diffusion_config": {"block_size": 0, "causal_context": False}}
    assert not migrate_hyperparameters(whole) and "drafter" not in whole["diffusion_config"]
    assert (
        DiffusionTask(
            model_config=TINY, diffusion_config=DiffusionConfig(**hparams["diffusion_config"])
        ).model.draft_head
        is None
    )
