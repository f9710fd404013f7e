import pytest
import torch

from polydiff.model.bert_diffusion import BertDiffusionModel, ModelConfig

TINY = ModelConfig(
    hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=32, dropout=0.0
)


def build(**overrides):
    config = ModelConfig(**{**TINY.__dict__, **overrides})
    torch.manual_seed(0)
    return BertDiffusionModel(config.to_bert_config(vocab_size=40, pad_token_id=0)).eval()


def test_logits_shape_and_sdpa():
    model = build()
    assert model.config._attn_implementation == "sdpa"
    assert model(torch.randint(5, 40, (3, 11))).shape == (3, 11, 40)


def test_pads_do_not_change_real_positions():
    model = build()
    x = torch.randint(5, 40, (2, 9))
    padded = torch.cat([x, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    mask = (padded != 0).long()
    with torch.no_grad():
        torch.testing.assert_close(model(padded, mask)[:, :9], model(x), atol=1e-5, rtol=1e-5)


def test_time_conditioning():
    x = torch.randint(5, 40, (2, 9))
    plain = build()
    assert plain.time_embedding is None
    with torch.no_grad():
        torch.testing.assert_close(plain(x, t=torch.tensor([0.1, 0.1])), plain(x, t=torch.tensor([0.9, 0.9])))
    timed = build(time_conditioning=True)
    with pytest.raises(ValueError, match="time-conditioned"):
        timed(x)
    with torch.no_grad():
        assert not torch.allclose(timed(x, t=torch.tensor([0.1, 0.1])), timed(x, t=torch.tensor([0.9, 0.9])))


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="must divide"):
        ModelConfig(hidden_size=30, num_heads=4)
