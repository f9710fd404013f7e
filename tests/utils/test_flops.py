"""polydiff.utils.flops: the fused layers count what torch counts for the same layers run unfused."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from polydiff.utils.flops import FUSED_FORMULAS, counted_flops


def counted_by_op(work) -> dict[str, int]:
    with FlopCounterMode(display=False, custom_mapping=FUSED_FORMULAS) as counter:
        work()
    return {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}


@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # torch's note on setting oneDNN's flags
def test_an_lstm_counts_its_input_and_recurrent_products_per_token():
    lstm = nn.LSTM(12, 16, num_layers=2, batch_first=True).eval()
    x = torch.randn(3, 5, 12)
    # Per token: 4 gates x 16 units of products with the input (12, then 16 wide) and the state (16).
    expected = 2 * 3 * 5 * (4 * 16 * 12 + 4 * 16 * 16 + 4 * 16 * 16 + 4 * 16 * 16)
    with torch.no_grad():
        _, fused = counted_flops(lambda: lstm(x))
        with torch.backends.mkldnn.flags(enabled=False):  # torch's own kernels: products it counts
            _, unfused = counted_flops(lambda: lstm(x))
    assert fused == unfused == expected


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN runs the fused LSTM layer")
def test_the_onednn_lstm_layer_is_the_kernel_counted():
    lstm = nn.LSTM(12, 16, batch_first=True).eval()
    with torch.no_grad():
        assert "aten.mkldnn_rnn_layer" in counted_by_op(lambda: lstm(torch.randn(3, 5, 12)))


def test_a_fused_encoder_layer_counts_as_the_same_layer_run_unfused():
    layer = nn.TransformerEncoderLayer(32, 4, 64, activation="gelu", batch_first=True, norm_first=True)
    src = torch.randn(3, 5, 32)
    # Per token: q, k, v and the output projection (4 x 32 x 32), the feed-forward (2 x 32 x 64);
    # attention over 5 positions, scores and weighted sum (2 x 5 x 32).
    expected = 2 * 15 * (4 * 32 * 32 + 2 * 32 * 64 + 2 * 5 * 32)
    with torch.inference_mode():
        fused = counted_by_op(lambda: layer.eval()(src))
    assert list(fused) == ["aten._transformer_encoder_layer_fwd"]
    with torch.no_grad():
        _, unfused = counted_flops(lambda: layer.train()(src))  # training mode: the layer's own modules
    assert fused["aten._transformer_encoder_layer_fwd"] == unfused == expected


def test_attention_on_the_cpu_counts_as_its_two_products():
    query, key, value = torch.randn(3, 2, 4, 16), torch.randn(3, 2, 9, 16), torch.randn(3, 2, 9, 16)
    mask = (torch.arange(9) < torch.tensor([1, 3, 5, 9]).unsqueeze(-1)).expand(3, 1, 4, 9)  # the first 1, 3, 5, 9 keys
    # Scores (4 x 9 per head, 16 wide) and the weighted sum of the values, whatever the mask.
    expected = 2 * 3 * 2 * 4 * 9 * (16 + 16)

    def written_out():
        scores = torch.matmul(query, key.transpose(-1, -2)).masked_fill(~mask, -torch.inf)
        return torch.matmul(scores.softmax(-1), value)

    with torch.inference_mode():
        fused = counted_by_op(lambda: nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask))
        _, unfused = counted_flops(written_out)
    assert list(fused) == ["aten._scaled_dot_product_flash_attention_for_cpu"]
    assert fused["aten._scaled_dot_product_flash_attention_for_cpu"] == unfused == expected
