"""benchmarks/quality.py end to end on a tiny budget (slow: it fits, samples and scores two models)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_quality_benchmark_writes_samples_metrics_and_a_summary(tmp_path):
    output = tmp_path / "quality"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--config", str(ROOT / "recipes" / "base.yaml"),
        "--config", str(ROOT / "tests" / "configs" / "tiny.yaml"), "--budget_minutes", "0.5", "--num_samples", "50",
        "--output_dir", str(output),
    ]  # fmt: skip
    # The MOSES reference statistics ship with polydiff: the temporary cache stays empty of them.
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    summary = json.loads(result.stdout)
    assert summary == json.loads((output / "summary.json").read_text())
    for model, folder in (("diffusion", output), ("charrnn", output / "charrnn")):
        assert len((folder / "samples.smi").read_text().splitlines()) == 50
        assert summary[model]["metrics"] == json.loads((folder / "metrics.json").read_text())
        assert summary[model]["steps"] > 0 and summary[model]["tokens_seen"] > 0
        assert summary[model]["samples_per_s"] > 0  # generation alone, measured alike for both
    # The CharRNN runs 100 steps per row: its two layers' recurrent products alone (4 gates of 256 units
    # over a 256-wide state) bound its count from below.
    assert summary["charrnn"]["mflop_per_sample"] * 1e6 >= 100 * 2 * (2 * 4 * 256 * 256)
    # The default says how many calls it made. (Fewer calls than tokens is not asserted here: a
    # 12-step model backs out of dead ends freely and its rewinds cost calls; with rewinds off,
    # tests/benchmarks/test_sampling_benchmark.py checks it.)
    assert summary["diffusion"]["nfe_per_sequence"] > 0 and summary["diffusion"]["tokens_per_sequence"] > 0


def test_a_budget_is_lightnings_max_time_and_must_be_positive(benchmark_script, capsys, monkeypatch):
    quality = benchmark_script("quality")
    assert quality.max_time(10) == "00:00:10:00" and quality.max_time(0.25) == "00:00:00:15"
    assert quality.max_time(1500) == "01:01:00:00"  # past a day: it wrapped to 01:00:00
    monkeypatch.setattr("sys.argv", ["quality.py", "--config", "recipes/base.yaml", "--budget_minutes", "-1"])
    with pytest.raises(SystemExit) as exit_info:
        quality.main()
    assert exit_info.value.code == 2
    assert "argument --budget_minutes: must be above 0, got -1" in capsys.readouterr().err
