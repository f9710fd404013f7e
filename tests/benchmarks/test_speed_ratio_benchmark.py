"""benchmarks/speed_ratio.py: a checkpoint's own decoding and the CharRNN's, in turns in one process."""

import json

import pytest


@pytest.mark.parametrize("streams", [1, 2])
def test_both_generators_take_turns_and_their_ratio_is_reported(streams, tmp_path, fit_tiny, capsys, benchmark_script):
    checkpoint = fit_tiny(tmp_path)
    options = ["--num_samples", "16", "--batch_size", "8", "--rounds", "2", "--streams", str(streams)]
    benchmark_script("speed_ratio").main(["--ckpt_path", str(checkpoint), *options])
    report = json.loads(capsys.readouterr().out)
    assert report["streams"] == streams
    rates = report["samples_per_s"]
    assert len(rates["polydiff"]) == len(rates["charrnn"]) == len(report["ratio"]) == 2
    for ours, theirs, ratio in zip(rates["polydiff"], rates["charrnn"], report["ratio"], strict=True):
        assert ratio == pytest.approx(ours / theirs, rel=0.02)  # rates rounded to 0.1
    assert min(report["ratio"]) <= report["median_ratio"] <= max(report["ratio"])
    # The CharRNN's 100 steps per row: its recurrent products alone (2 layers, 4 gates, 256 units).
    assert report["mflop_per_sample"]["charrnn"] * 1e6 >= 100 * 2 * (2 * 4 * 256 * 256)
    assert report["mflop_per_sample"]["polydiff"] > 0


def test_more_streams_than_rows_are_refused(tmp_path, fit_tiny, capsys, benchmark_script):
    checkpoint = fit_tiny(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        benchmark_script("speed_ratio").main(["--ckpt_path", str(checkpoint), "--batch_size", "2", "--streams", "3"])
    assert exit_info.value.code == 2
    assert "--streams must lie in 1..min(batch_size, num_samples)" in capsys.readouterr().err
