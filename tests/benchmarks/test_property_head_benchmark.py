"""benchmarks/property_head.py: what a conditioned checkpoint's property head knows, as JSON."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CONDITIONS = str(ROOT / "recipes" / "conditions.yaml")


def test_a_conditioned_checkpoint_reports_its_head_at_four_points_of_each_molecule(
    tmp_path, fit_tiny, capsys, benchmark_script
):
    root = tmp_path / "fit"
    checkpoint = fit_tiny(root, "-c", CONDITIONS, "--trainer.default_root_dir", str(root))
    benchmark_script("property_head").main(["--ckpt_path", str(checkpoint), "--num_molecules", "60"])
    report = json.loads(capsys.readouterr().out)
    assert report["molecules"] == 60
    assert set(report["properties"]) == {"qed", "logp", "mw", "tpsa", "sa"}
    for rows in report["properties"].values():
        assert set(rows) == {"0.25", "0.5", "0.75", "1"}
        for row in rows.values():
            assert row["mse"] >= 0 and row["predicted_variance"] > 0 and row["r2"] <= 1


def test_a_checkpoint_without_a_head_is_one_clear_error(tmp_path, fit_tiny, benchmark_script):
    checkpoint = fit_tiny(tmp_path / "plain")
    with pytest.raises(SystemExit, match="has no property head"):
        benchmark_script("property_head").main(["--ckpt_path", str(checkpoint), "--num_molecules", "10"])


def test_the_molecules_are_read_as_the_model_writes_them(benchmark_script):
    from polydiff import DiffusionTask

    task = DiffusionTask(representation="selfies")
    smiles, texts = benchmark_script("property_head").test_molecules(task, 20)
    assert len(smiles) == len(texts) == 20 and texts[0].startswith("[")
    ids = task.tokenizer(texts)["input_ids"]
    # SMILES read by the SELFIES vocabulary would be [UNK] throughout.
    assert task.tokenizer.unk_token_id not in {i for row in ids for i in row}
