"""Block diffusion: each block sees itself and the blocks before it, the same in training and sampling."""

import pytest
import torch

from polydiff.diffusion.blocks import block_index, draw_windows, sampling_mask, training_mask, window_mask
from polydiff.model.bert_diffusion import BertDiffusionModel, ModelConfig

CLS, SEP, PAD, MASK = 1, 2, 0, 3


def frame_and_content(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[SEP] is generated (content); [CLS] is the frame."""
    return (x != CLS) & (x != PAD), x == CLS


def test_blocks_count_content_tokens_only():
    x = torch.tensor([[CLS, 5, 6, 7, 8, 9, SEP, PAD]])
    content, _ = frame_and_content(x)
    assert block_index(content, 2).tolist() == [[-1, 0, 0, 1, 1, 2, 2, -1]]


def test_sampling_mask_is_block_causal_with_a_visible_frame():
    x = torch.tensor([[CLS, 5, 6, 7, 8, SEP, PAD]])
    content, frame = frame_and_content(x)
    allowed = sampling_mask(content, frame, 2)[0]
    assert allowed[0].tolist() == [True, False, False, False, False, False, False]  # [CLS]: itself only
    assert allowed[1].tolist() == [True, True, True, False, False, False, False]  # block 0: itself + [CLS]
    assert allowed[3].tolist() == [True, True, True, True, True, False, False]  # block 1: blocks 0 and 1
    assert allowed[5].tolist() == [True, True, True, True, True, True, False]  # [SEP] ends block 2
    assert not allowed[:, 6].any()  # nobody sees a pad


def tiny_model_and_noisy_batch():
    """A tiny untrained BERT (eval) and two sequences, half of their content masked (fixed seed)."""
    torch.manual_seed(0)
    config = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, dropout=0.0)
    model = BertDiffusionModel(config.to_bert_config(vocab_size=20, pad_token_id=PAD)).eval()
    x0 = torch.tensor([[CLS, *range(5, 15), SEP, PAD, PAD], [CLS, *range(10, 18), SEP, PAD, PAD, PAD, PAD]])
    content, frame = frame_and_content(x0)
    x_t = torch.where(content & (torch.rand(x0.shape) < 0.5), MASK, x0)
    return model, x0, x_t, content, frame


@pytest.mark.parametrize("block_size", [1, 3, 16])
def test_training_pass_gives_each_block_its_sampling_view(block_size):
    """The x_t half of the 2N training pass equals, block by block, one N-long pass in which the
    earlier blocks are clean, the block is x_t and the later blocks are anything at all."""
    model, x0, x_t, content, frame = tiny_model_and_noisy_batch()
    positions = torch.arange(x0.shape[1]).repeat(2).expand(2, -1)
    with torch.no_grad():
        both = model.encode(torch.cat([x_t, x0], 1), training_mask(content, frame, block_size), None, positions)
        blocks = block_index(content, block_size)
        for k in range(int(blocks.max()) + 1):
            view = torch.where(blocks < k, x0, torch.where(blocks == k, x_t, torch.randint(4, 20, x0.shape)))
            view = torch.where(content, view, x0)
            single = model.encode(view, sampling_mask(content, frame, block_size))
            here = blocks == k
            torch.testing.assert_close(both[:, : x0.shape[1]][here], single[here], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block_size", [2, 4])
def test_a_causal_context_gives_sampling_the_training_view(block_size):
    """With a causal context, a call over [x ; a window at the current block] reproduces the training
    pass over every block: the clean half's causal states (the next-token predictions) and the noisy block's states."""
    model, x0, x_t, content, frame = tiny_model_and_noisy_batch()
    n = x0.shape[1]
    positions = torch.arange(n).repeat(2).expand(2, -1)
    with torch.no_grad():
        both = model.encode(torch.cat([x_t, x0], 1), training_mask(content, frame, block_size, True), None, positions)
        # The clean half is causal: token i's state depends on tokens <= i only.
        later = torch.where(torch.arange(n) > 6, torch.randint(4, 20, x0.shape), x0)
        again = model.encode(
            torch.cat([x_t, later], 1), training_mask(content, frame, block_size, True), None, positions
        )
        torch.testing.assert_close(both[:, n : n + 7], again[:, n : n + 7], atol=1e-5, rtol=1e-5)
        blocks = block_index(content, block_size)
        for k in range(int(blocks.max()) + 1):
            block_start = torch.tensor([1 + k * block_size] * 2)
            slots = block_start.unsqueeze(-1) + torch.arange(block_size)
            in_block = (slots < n) & (blocks.gather(1, slots.clamp(max=n - 1)) == k)
            block = torch.where(in_block, x_t.gather(1, slots.clamp(max=n - 1)), PAD)
            ids = torch.cat([torch.arange(n).expand(2, -1), slots.clamp(max=n - 1)], -1)
            attention = window_mask(content, frame, block_start.unsqueeze(-1), in_block.unsqueeze(1))
            call = model.encode(torch.cat([x0, block], 1), attention, None, ids)
            torch.testing.assert_close(call[:, :n][content], both[:, n:][content], atol=1e-5, rtol=1e-5)
            here = blocks == k
            torch.testing.assert_close(call[:, n:][in_block], both[:, :n][here], atol=1e-5, rtol=1e-5)
            # One N-long pass, as templates and the reverse process decode: the same view again.
            view = torch.where(blocks < k, x0, torch.where(here, x_t, torch.randint(4, 20, x0.shape)))
            single = model.encode(torch.where(content, view, x0), sampling_mask(content, frame, block_size, k))
            torch.testing.assert_close(single[here], both[:, :n][here], atol=1e-5, rtol=1e-5)


def test_windows_see_the_context_before_them_and_never_each_other():
    """Several windows in one pass (training's random windows, sampling's one window per cut) give
    each window the states of a pass with that window alone, and the sequence its causal states."""
    model, x0, _, content, frame = tiny_model_and_noisy_batch()
    n, block_size = x0.shape[1], 3
    starts, in_window = draw_windows(content, 4, block_size, torch.Generator().manual_seed(1))
    # Starts reach B - 1 before the content (windows cut at its start) and its last token ([SEP]).
    assert (starts >= 1 - (block_size - 1)).all() and (starts < 1 + content.sum(-1, keepdim=True)).all()
    assert in_window.any(-1).all()  # every window holds a content token
    slots = (starts.unsqueeze(-1) + torch.arange(block_size)).flatten(1).clamp(0, n - 1)
    windows = torch.where(in_window.flatten(1), MASK, PAD)
    ids = torch.cat([torch.arange(n).expand(2, -1), slots], -1)
    with torch.no_grad():
        together = model.encode(torch.cat([x0, windows], 1), window_mask(content, frame, starts, in_window), None, ids)
        causal = model.encode(x0, sampling_mask(content, frame, 1))
        torch.testing.assert_close(together[:, :n][content], causal[content], atol=1e-5, rtol=1e-5)
        for w in range(4):
            one = slice(w * block_size, (w + 1) * block_size)
            alone = model.encode(
                torch.cat([x0, windows[:, one]], 1),
                window_mask(content, frame, starts[:, w : w + 1], in_window[:, w : w + 1]),
                None,
                torch.cat([ids[:, :n], slots[:, one]], -1),
            )
            valid = in_window[:, w]
            torch.testing.assert_close(together[:, n:][:, one][valid], alone[:, n:][valid], atol=1e-5, rtol=1e-5)
            # A window sees only the content before its start: rewriting the rest changes nothing.
            after = content & (torch.arange(n) >= starts[:, w : w + 1])
            later = torch.where(after, torch.randint(4, 20, x0.shape), x0)
            moved = model.encode(
                torch.cat([later, windows[:, one]], 1),
                window_mask(content, frame, starts[:, w : w + 1], in_window[:, w : w + 1]),
                None,
                torch.cat([ids[:, :n], slots[:, one]], -1),
            )
            torch.testing.assert_close(moved[:, n:][valid], alone[:, n:][valid], atol=1e-5, rtol=1e-5)


def test_windows_cover_every_content_token_alike():
    """Each token lies in B of the L + B - 1 equally likely windows: drawn uniformly, every position
    is covered with probability B / (L + B - 1), the first tokens as often as the middle ones."""
    content = torch.tensor([[False, *[True] * 9, False, False]]).expand(4000, -1)
    block_size = 3
    _, in_window = draw_windows(content, 1, block_size, torch.Generator().manual_seed(0))
    starts, _ = draw_windows(content, 1, block_size, torch.Generator().manual_seed(0))
    slots = starts.unsqueeze(-1) + torch.arange(block_size)
    covered = torch.zeros(12)
    covered.index_add_(0, slots[in_window], torch.ones(int(in_window.sum())))
    share = covered[1:10] / 4000
    expected = block_size / (9 + block_size - 1)
    # Binomial: std sqrt(p (1 - p) / 4000) = 0.0075; 4.5 std either side.
    assert torch.allclose(share, torch.full_like(share, expected), atol=0.034)
    assert covered[0] == covered[10] == 0
