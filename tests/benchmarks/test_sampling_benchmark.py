"""benchmarks/sampling.py on the default recipe's decoding: one JSON report with speed, calls and constraint cost."""

import importlib.util
import json
from pathlib import Path

import pytest

from polydiff.sampling import speculative

ROOT = Path(__file__).parents[2]


def sampling_benchmark():
    spec = importlib.util.spec_from_file_location("sampling_benchmark", ROOT / "benchmarks" / "sampling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, fit_tiny) -> Path:
    return fit_tiny(tmp_path_factory.mktemp("sampling-benchmark"))


def test_a_block_model_reports_its_default_decoding(checkpoint, capsys, monkeypatch):
    # Without rewinds every call commits at least one token; a barely trained model spends its
    # rewinds freely, and re-written tokens cost calls that the final count does not show.
    monkeypatch.setattr(speculative, "MAX_REWINDS", 0)
    monkeypatch.setattr(speculative, "REFUSED_REWINDS", 0)
    benchmark = sampling_benchmark()
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
    assert report["cache_identical"] and report["uncached_samples_per_s"] > 0
    # The timing wrappers are gone afterwards.
    assert benchmark.SmilesSyntax.allowed.__name__ == "allowed"


def test_precision_is_refused_for_the_whole_sequence_runs(tmp_path, fit_tiny):
    whole = fit_tiny(tmp_path, "--model.diffusion_config.block_size", "0", "--model.diffusion_config.causal_context",
                     "false")  # fmt: skip
    with pytest.raises(SystemExit):
        sampling_benchmark().main(["--ckpt_path", str(whole), "--precision", "bf16"])
