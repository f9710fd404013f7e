"""benchmarks/memory.py: the peak memory of a real fit in a subprocess, and the steps it trained."""

import ctypes.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def test_reports_the_peak_over_processes_and_the_steps_trained(smiles_files, capsys, benchmark_script):
    data = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
    # tiny.yaml's own max_steps would override --max_steps, which comes before it: set it after.
    # Six steps end on tiny.yaml's validation, where every Lightning version writes last.ckpt.
    benchmark_script("memory").main(["--", "-c", str(TINY), *data, "--trainer.max_steps", "6"])
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 6  # read from the run's own last.ckpt
    # torch, Lightning, transformers and RDKit alone take hundreds of MB; the sum is at least the main process.
    assert report["peak_pss_mb"] >= report["main_process_peak_pss_mb"] > 200
    assert report["peak_rss_mb"] >= report["peak_pss_mb"]
    assert report["allocator"] == ("jemalloc" if ctypes.util.find_library("jemalloc") else "system")


def test_a_failed_fit_stops_with_its_error(benchmark_script):
    with pytest.raises(SystemExit, match="polydiff fit failed"):
        benchmark_script("memory").main(["--", "--data.train_file", "/no/such/file.smi"])
