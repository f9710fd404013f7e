"""The evaluation report: metrics.json, the property plot and the molecule grid are real files."""

import json
import math

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from polydiff.chem.metrics import evaluate
from polydiff.chem.reference import compute_reference
from polydiff.chem.report import histogram_bins, metrics_table, plot_molecules, write_metrics, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_size=(100, 100)):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size >= min_size
        darkest, _ = image.convert("L").getextrema()
        assert darkest < 128  # something is drawn on the white page


@pytest.fixture(scope="module")
def reference(moses_sample):
    return compute_reference(moses_sample[:60])


def test_write_report_writes_json_and_two_png_images(tmp_path, moses_sample, reference):
    result = evaluate([*moses_sample[100:130], "", "C1CC", moses_sample[100]], reference)
    files = write_report(result, reference, tmp_path / "report")
    assert sorted(files) == ["metrics.json", "molecules.png", "properties.png"]
    metrics = json.loads(files["metrics.json"].read_text())
    assert metrics["valid"] == pytest.approx(31 / 33)
    assert {"FCD/Test", "SNN/Test", "Frag/Test", "Scaf/Test", "IntDiv", "IntDiv2", "Filters", "QED"} <= set(metrics)
    assert_png(files["properties.png"], (1000, 600))
    assert_png(files["molecules.png"], (1000, 800))  # 24 molecules, 6 per row


def test_report_without_reference_or_valid_samples_still_writes_images(tmp_path):
    result = evaluate(["", "C1CC", "xyz"])
    files = write_report(result, None, tmp_path)
    assert json.loads(files["metrics.json"].read_text())["IntDiv"] is None  # NaN is written as null
    assert_png(files["properties.png"])
    assert_png(files["molecules.png"], (300, 50))


def test_a_report_stopped_midway_leaves_the_earlier_one_whole(tmp_path, monkeypatch):
    import polydiff.chem.report as report

    earlier = write_report(evaluate(["CCO", "c1ccccc1"]), None, tmp_path / "report", {"samples": "earlier.smi"})
    assert sorted(earlier) == ["inputs.json", "metrics.json", "molecules.png", "properties.png"]
    before = {name: path.read_bytes() for name, path in earlier.items()}

    def interrupted(*args):  # Ctrl-C while the last image is drawn
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot_molecules", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(evaluate(["xyz"]), None, tmp_path / "report", {"samples": "stopped.smi"})
    assert {name: path.read_bytes() for name, path in earlier.items()} == before
    monkeypatch.undo()
    files = write_report(evaluate(["xyz"]), None, tmp_path / "report")  # clears what the stopped run left
    assert json.loads(files["metrics.json"].read_text())["valid"] == 0
    assert not (tmp_path / "report" / "inputs.json").exists()  # the earlier one is of other samples
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report"]


def test_polymer_grid_draws_attachment_points(tmp_path):
    plot_molecules(["*CC(*)c1ccccc1", "*CC*"], tmp_path / "polymers.png", per_row=2)
    assert_png(tmp_path / "polymers.png", (400, 150))


def test_a_long_chain_in_the_grid_leaves_the_other_molecules_their_size(tmp_path):
    plot_molecules(["C" * 300, "c1ccccc1O"], tmp_path / "grid.png")
    pixels = np.asarray(Image.open(tmp_path / "grid.png").convert("L"))
    phenol = pixels[:170, 250:500]  # its cell (250 x 200), above its legend
    assert (phenol < 128).sum() > 500  # drawn at the chain's scale, it was a dot of a dozen pixels


def test_metrics_json_is_strict_json(tmp_path):
    write_metrics({"valid": 0.5, "FCD/Test": math.nan}, tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and json.loads(text) == {"valid": 0.5, "FCD/Test": None}


def test_metrics_table_lists_every_metric():
    console = Console(record=True, width=120)
    console.print(metrics_table({"valid": 0.25, "unique@1000": 1.0, "FCD/Test": math.nan}))
    text = console.export_text()
    assert "0.2500" in text and "unique@1000" in text and "n/a" in text and "Fréchet" in text
    assert "first k valid" in text
    console.print(metrics_table({"valid": 0.5, "polymer_valid": 0.25, "unique@1000": 1.0}))
    assert "distinct among the first k polymer-valid" in console.export_text()  # a polymer's units


def test_histogram_bins_cover_a_distribution_far_from_the_reference():
    """Samples guided to logP 6, against a reference centred on 2: the axis reaches them, and no
    edge bin collects them."""
    rng = np.random.default_rng(0)
    reference = rng.normal(2.0, 0.5, 5000)
    guided = rng.normal(6.0, 0.3, 200)
    bins = histogram_bins([(reference, None), (guided, np.ones(200, dtype=np.int64))])
    assert bins[0] <= np.percentile(reference, 1) and bins[-1] >= np.percentile(guided, 99)
    counts, _ = np.histogram(guided, bins)
    assert counts[-1] < counts.max() / 4  # the guided mode lies inside the axis, not at its edge
    assert np.allclose(np.diff(bins), np.diff(bins)[0])


def test_histogram_bins_of_whole_numbers_are_one_value_wide():
    bins = histogram_bins([(np.arange(20, 60, dtype=float), None), (np.array([30.0, 31.0]), np.array([5, 1]))])
    assert np.all(np.diff(bins) == 1) and bins[0] <= 19.5 and bins[-1] >= 59.5


def test_histogram_bins_of_a_few_samples_hold_every_one():
    # Two molecules' QED: the 0.5% tails of so few values would leave both off the axis.
    for values in (np.array([0.41, 0.63]), np.linspace(0.1, 0.9, 20)):
        bins = histogram_bins([(values, np.ones(len(values), dtype=np.int64))])
        assert bins[0] <= values.min() and bins[-1] >= values.max()
