"""Several processes through Lightning's own DDP: a 2-process CPU fit (gloo), launched as users launch it."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from polydiff.commands import user_errors
from polydiff.tasks.ema import EMAWeightAveraging

ROOT = Path(__file__).parents[1]
TESTS = Path(__file__).parent


def environment(tmp_path: Path) -> dict[str, str]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(TESTS / "helpers"), os.environ.get("PYTHONPATH", "")])}
    return env | {"POLYDIFF_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def fit_on_two_processes(tmp_path: Path, smiles_files, recipes: list[str], *args: str) -> subprocess.CompletedProcess:
    layers = [arg for recipe in recipes for arg in ("-c", str(ROOT / "recipes" / "trainer" / recipe))]
    command = [
        sys.executable, "-m", "polydiff", "fit",
        "-c", str(ROOT / "recipes" / "base.yaml"), "-c", str(TESTS / "configs" / "tiny.yaml"), *layers,
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.precision", "32-true",
        "--trainer.default_root_dir", str(tmp_path / "run"),
        "--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"]),
        "--data.num_workers", "0", "--data.global_batch_size", "128", *args,
    ]  # fmt: skip
    return subprocess.run(command, env=environment(tmp_path), capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("recipes", [["ddp.yaml"], ["ddp.yaml", "ema.yaml"]], ids=["ddp", "ddp+ema"])
def test_two_process_ddp_fit_ends_with_equal_weights_on_both_ranks(tmp_path, smiles_files, recipes):
    if "ema.yaml" in recipes and EMAWeightAveraging is None:
        pytest.skip("EMA needs Lightning 2.6 (EMAWeightAveraging)")
    probe = tmp_path / "probe"
    probing = ["--trainer.callbacks+=probes.WeightProbe", "--trainer.callbacks.output_dir", str(probe)]
    result = fit_on_two_processes(tmp_path, smiles_files, recipes, "--trainer.max_steps", "6", *probing)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["step"] == ranks[1]["step"] == 6
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients were all-reduced every step
    # Every rank counts the run's tokens, not its own share.
    assert ranks[0]["tokens_seen"] == ranks[1]["tokens_seen"] == sum(r["batch_tokens"] for r in ranks)
    assert (tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert len(list((tmp_path / "cache" / "tokens").iterdir())) == 2  # train and val, tokenized once
    if recipes != ["ddp.yaml"]:
        return
    # Two processes predict: each writes its share, and the named file holds them all.
    output = tmp_path / "samples.smi"
    predict = [
        sys.executable, "-m", "polydiff", "predict", "-c", str(ROOT / "recipes" / "base.yaml"),
        "-c", str(TESTS / "configs" / "tiny.yaml"), "-c", str(ROOT / "recipes" / "trainer" / "ddp.yaml"),
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.precision", "32-true",
        "--ckpt_path", str(tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"),
        "--data.train_file", str(smiles_files["train"]), "--data.num_samples", "7",
        "--trainer.callbacks+=polydiff.SampleWriter", "--trainer.callbacks.output_file", str(output),
        "--trainer.default_root_dir", str(tmp_path / "predict"),
    ]  # fmt: skip
    result = subprocess.run(predict, env=environment(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(output.read_text().splitlines()) == 7
    assert not list(tmp_path.glob("samples.smi.rank*"))


def test_ctrl_c_on_one_process_stops_both_at_the_same_step_and_saves_it(tmp_path, smiles_files):
    # `kill -INT` of one process (a terminal's Ctrl-C reaches both): rank 0 must stop too, or the
    # ranks' next collectives would not meet.
    probing = [
        "--trainer.callbacks+=probes.LossProbe", "--trainer.callbacks.output_file", str(tmp_path / "losses.jsonl"),
        "--trainer.callbacks.kill_at_step", "3", "--trainer.callbacks.kill_signal", "SIGINT",
        "--trainer.callbacks.kill_rank", "1",
    ]  # fmt: skip
    result = fit_on_two_processes(tmp_path, smiles_files, ["ddp.yaml"], "--trainer.max_steps", "100", *probing)
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
    last = tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert result.stderr.count(f"stopped by Ctrl-C at step 3; saved {last}") == 1
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 3


def test_a_bad_file_ends_a_two_process_fit_with_its_own_error_not_the_backends(tmp_path, smiles_files):
    bad = tmp_path / "bad.smi"
    bad.write_text("C1CC(\nxyz\n")
    result = fit_on_two_processes(tmp_path, smiles_files, ["ddp.yaml"], "--data.train_file", str(bad))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("polydiff: error:")]
    assert errors and "no usable line" in errors[0]
    # The other process hears only that a peer closed its socket: it says so, not gloo's words.
    assert all("no usable line" in line or "another process of the run stopped" in line for line in errors), errors
    assert "Connection closed by peer" not in result.stderr


@pytest.mark.parametrize("rank", [None, "1"])
def test_a_peers_closed_socket_is_said_to_be_another_processs_failure_only_in_a_multi_process_run(
    monkeypatch, capsys, rank
):
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    if rank is not None:
        monkeypatch.setenv("LOCAL_RANK", rank)  # as Lightning's launcher starts the other processes
    gloo = "[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:23168"
    with pytest.raises(SystemExit), user_errors("polydiff fit"):
        raise RuntimeError(gloo)
    said = capsys.readouterr().err
    if rank is None:  # one process: the error is its own, said as it is
        assert "RuntimeError: [../gloo" in said
    else:
        assert (
            said
            == "polydiff fit: error: another process of the run stopped (its own error says why), so did this one\n"
        )
