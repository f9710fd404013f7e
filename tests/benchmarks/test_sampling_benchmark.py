"""benchmarks/sampling.py on the default recipe's decoding: one JSON report with speed, calls and constraint cost."""

import json
from pathlib import Path

import pytest

from polydiff.sampling import speculative
from polydiff.tasks.inference import load


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, fit_tiny) -> Path:
    return fit_tiny(tmp_path_factory.mktemp("sampling-benchmark"))


def test_a_block_model_reports_its_default_decoding(checkpoint, capsys, monkeypatch, benchmark_script):
    # Without rewinds every call commits at least one token; a barely trained model spends its
    # rewinds freely, and re-written tokens cost calls that the final count does not show.
    monkeypatch.setattr(speculative, "MAX_REWINDS", 0)
    monkeypatch.setattr(speculative, "REFUSED_REWINDS", 0)
    benchmark = benchmark_script("sampling")
    benchmark.main(["--ckpt_path", str(checkpoint), "--num_samples", "24", "--batch_size", "8", "--device", "cpu"])
    report = json.loads(capsys.readouterr().out)
    assert report["num_samples"] == 24 and report["samples_per_s"] > 0
    assert report["nfe_per_sequence"] <= report["tokens_per_sequence"]
    assert report["nfe_per_token"] == pytest.approx(
        report["nfe_per_sequence"] / report["tokens_per_sequence"], abs=0.01
    )
    assert 0 < report["constraint_share"] < 1  # SMILES: the automaton and the kekulization check ran
    parts = report["constraint_share_by_part"]
    assert parts["automaton"] > 0 and parts["kekulization"] > 0
    assert sum(parts.values()) == pytest.approx(report["constraint_share"], abs=0.002)  # three roundings
    # The model's calls, the constraints and the decoder's own work share the time.
    assert 0 < report["model_share"] < 1 and 0 < report["decoder_share"] < 1
    shares = report["model_share"] + report["constraint_share"] + report["decoder_share"]
    assert shares == pytest.approx(1, abs=0.002)
    # Every token written passes the encoder's layers at least once: their products bound the count.
    config = load(str(checkpoint), "cpu").model.config
    width, layers = config.hidden_size, config.num_hidden_layers
    per_token = 2 * layers * (4 * width * width + 2 * width * config.intermediate_size)
    assert report["model_mflop_per_sample"] * 1e6 >= report["tokens_per_sequence"] * per_token
    assert report["model_gflop_per_s"] > 0 and report["flops_counted_on_the_same_samples"]
    assert report["cache_identical"] and report["uncached_samples_per_s"] > 0
    # The timing wrappers are gone afterwards.
    assert benchmark.SmilesSyntax.allowed_within.__name__ == "allowed_within"
    assert benchmark.DiffusionTask.encode_incremental.__name__ == "encode_incremental"


def test_precision_is_refused_for_the_whole_sequence_runs(tmp_path, fit_tiny, benchmark_script):
    whole = fit_tiny(tmp_path, "--model.diffusion_config.block_size", "0", "--model.diffusion_config.causal_context",
                     "false")  # fmt: skip
    with pytest.raises(SystemExit):
        benchmark_script("sampling").main(["--ckpt_path", str(whole), "--precision", "bf16"])
