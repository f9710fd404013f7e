"""Killed runs resume: `polydiff fit --ckpt_path last` after SIGKILL continues with the same batches and losses."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).parents[1]
TESTS = Path(__file__).parent


def fit(tmp_path: Path, smiles_files, root: str, probe: str, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "polydiff", "fit",
        "-c", str(ROOT / "recipes" / "base.yaml"), "-c", str(TESTS / "configs" / "tiny.yaml"),
        "-c", str(TESTS / "configs" / "resume.yaml"),
        "--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"]),
        "--trainer.default_root_dir", str(tmp_path / root),
        "--trainer.callbacks+=probes.LossProbe", "--trainer.callbacks.output_file", str(tmp_path / probe), *args,
    ]  # fmt: skip
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(TESTS / "helpers"), os.environ.get("PYTHONPATH", "")])}
    env |= {"POLYDIFF_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def steps(path: Path) -> dict[int, dict]:
    return {record["step"]: record for record in map(json.loads, path.read_text().splitlines())}


@pytest.mark.parametrize(
    ("epoch_batches", "limited"),
    [(None, False), (3, False), (4, False), (4, True)],
    ids=["in the first epoch", "in the third epoch", "at the second epoch's end", "at its end under a batch limit"],
)
def test_sigkilled_fit_resumes_from_last_with_the_same_batches_and_losses(
    tmp_path, smiles_files, epoch_batches, limited
):
    data = []
    if limited:  # the whole file, 4 batches an epoch by limit_train_batches
        data = ["--trainer.limit_train_batches", str(epoch_batches)]
    elif epoch_batches:  # batches of 32: last.ckpt at step 8 is the third epoch's second batch, or the second's last
        short = tmp_path / "short.smi"
        short.write_text("".join(smiles_files["train"].read_text().splitlines(keepends=True)[: 32 * epoch_batches]))
        data = ["--data.train_file", str(short)]
    whole = fit(tmp_path, smiles_files, "whole", "whole.jsonl", *data)
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = fit(tmp_path, smiles_files, "killed", "first.jsonl", "--trainer.callbacks.kill_at_step", "10", *data)
    assert killed.returncode == -signal.SIGKILL
    resumed = fit(tmp_path, smiles_files, "killed", "resumed.jsonl", "--ckpt_path", "last", *data)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "last.ckpt" in resumed.stderr

    reference, first = steps(tmp_path / "whole.jsonl"), steps(tmp_path / "first.jsonl")
    second = steps(tmp_path / "resumed.jsonl")
    assert sorted(first) == list(range(1, 11)) and sorted(second) == list(range(9, 17))  # last.ckpt was at step 8
    for step in range(1, 17):
        run = first if step <= 10 else second
        assert run[step]["batch"] == reference[step]["batch"], f"step {step}: another batch"
        assert run[step]["loss"] == reference[step]["loss"], f"step {step}: another loss"
    for step in (9, 10):  # trained twice: before the kill, and again after resuming from step 8
        assert second[step] == first[step]


@pytest.mark.parametrize(("stop_signal", "named"), [("SIGTERM", "SIGTERM"), ("SIGINT", "Ctrl-C")])
def test_a_fit_stopped_by_a_signal_saves_its_last_step_exits_nonzero_and_resumes_there(
    tmp_path, smiles_files, stop_signal, named
):
    whole = fit(tmp_path, smiles_files, "whole", "whole.jsonl")
    assert whole.returncode == 0, whole.stderr[-3000:]
    stopped = fit(tmp_path, smiles_files, "stopped", "first.jsonl", "--trainer.callbacks.kill_at_step", "10",
                  "--trainer.callbacks.kill_signal", stop_signal)  # fmt: skip
    # Not 0, as Lightning leaves it: a script's next command must not take the run for finished.
    assert stopped.returncode == 128 + signal.Signals[stop_signal], stopped.stderr[-3000:]
    saved = tmp_path / "stopped/lightning_logs/version_0/checkpoints/last.ckpt"
    assert f"stopped by {named} at step 10; saved {saved}: resume with --ckpt_path last" in stopped.stderr
    assert "Received SIGTERM" not in stopped.stderr or stop_signal == "SIGTERM"
    resumed = fit(tmp_path, smiles_files, "stopped", "resumed.jsonl", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference, first = steps(tmp_path / "whole.jsonl"), steps(tmp_path / "first.jsonl")
    second = steps(tmp_path / "resumed.jsonl")
    assert sorted(first) == list(range(1, 11)) and sorted(second) == list(range(11, 17))  # saved at step 10
    for step in range(1, 17):
        run = first if step <= 10 else second
        assert run[step]["batch"] == reference[step]["batch"], f"step {step}: another batch"
        assert run[step]["loss"] == reference[step]["loss"], f"step {step}: another loss"


def test_ctrl_c_within_an_accumulation_window_stops_at_its_end_and_resumes_as_if_never_stopped(tmp_path, smiles_files):
    accumulating = ["--data.global_batch_size", "64"]  # tiny.yaml's batches of 32: two per optimizer step
    whole = fit(tmp_path, smiles_files, "whole", "whole.jsonl", *accumulating)
    assert whole.returncode == 0, whole.stderr[-3000:]
    stopped = fit(tmp_path, smiles_files, "stopped", "first.jsonl", *accumulating, "--trainer.callbacks.kill_at_batch",
                  "8", "--trainer.callbacks.kill_signal", "SIGINT")  # fmt: skip
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    assert "stopped by Ctrl-C at step 5" in stopped.stderr  # batch 9 closes the window batch 8 opened
    resumed = fit(tmp_path, smiles_files, "stopped", "resumed.jsonl", *accumulating, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = [(tmp_path / name).read_text().splitlines() for name in ("whole.jsonl", "first.jsonl", "resumed.jsonl")]
    assert len(records[1]) == 10 and records[1] + records[2] == records[0]  # same batches, same losses


def test_a_second_ctrl_c_stops_the_fit_at_once_saving_nothing(tmp_path, smiles_files):
    stopped = fit(tmp_path, smiles_files, "stopped", "first.jsonl", "--trainer.callbacks.kill_at_step", "10",
                  "--trainer.callbacks.kill_signal", "SIGINT", "--trainer.callbacks.kill_times", "2")  # fmt: skip
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]  # 130, as a shell counts Ctrl-C
    saved = tmp_path / "stopped/lightning_logs/version_0/checkpoints/last.ckpt"
    assert "Ctrl-C again stops at once" in stopped.stderr
    assert stopped.stderr.endswith(
        f"polydiff: stopped by Ctrl-C at once, at step 10, saving nothing; the last saved is {saved}\n"
    )
    last = torch.load(saved, weights_only=True)
    assert last["global_step"] == 8  # resume.yaml's save every 4 steps, not the step the fit stopped at


def test_ctrl_c_before_training_begins_ends_with_one_line_and_130(tmp_path, smiles_files):
    stopped = fit(tmp_path, smiles_files, "stopped", "first.jsonl", "--trainer.callbacks.kill_at_setup", "true",
                  "--trainer.callbacks.kill_signal", "SIGINT")  # fmt: skip
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    assert stopped.stderr.endswith("polydiff: stopped by Ctrl-C before training began, saving nothing\n")
    assert "Traceback" not in stopped.stderr and not (tmp_path / "first.jsonl").exists()


def test_base_recipe_writes_last_checkpoint_at_least_every_two_minutes():
    callbacks = yaml.safe_load((ROOT / "recipes" / "base.yaml").read_text())["trainer"]["callbacks"]
    timed = [c["init_args"] for c in callbacks if c["init_args"].get("train_time_interval")]
    assert [args["save_last"] for args in timed] == [True]
    hours, minutes, seconds = map(int, timed[0]["train_time_interval"].split(":"))
    assert 0 < 3600 * hours + 60 * minutes + seconds <= 120


def _monitoring_state(checkpoint: dict) -> dict:
    (key,) = [key for key in checkpoint["callbacks"] if "'monitor': 'val/nll'" in key]
    return checkpoint["callbacks"][key]


def _unbeatable(last: Path) -> Path:
    """Gives the run of ``last`` a best val/nll of 0, which no later validation beats (Lightning alone
    would forget it in a new version folder); returns the best checkpoint's path."""
    best = last.with_name("best.ckpt")
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    state = _monitoring_state(checkpoint)
    assert state["best_model_path"] == str(best)
    unbeatable = torch.tensor(0.0)
    state |= {"best_model_score": unbeatable, "kth_value": unbeatable, "best_k_models": {str(best): unbeatable}}
    torch.save(checkpoint, last)
    return best


def _resumed_record(root: Path) -> dict:
    return _monitoring_state(torch.load(root / "lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True))


@pytest.mark.parametrize("earlier_best", ["kept", "deleted"])
def test_a_resumed_fit_keeps_the_best_score_of_the_run_it_continues(tmp_path, fit_tiny, earlier_best):
    last = fit_tiny(tmp_path)  # validations at steps 6 and 12
    best = _unbeatable(last)
    if earlier_best == "deleted":
        best.unlink()

    fit_tiny(tmp_path, "--ckpt_path", "last", "--trainer.max_steps", "18")
    resumed = tmp_path / "lightning_logs/version_1/checkpoints"
    saved = _resumed_record(tmp_path)
    if earlier_best == "kept":  # the record goes on: no worse best.ckpt, and the earlier one is where it was
        assert not (resumed / "best.ckpt").exists() and best.is_file()
        assert saved["best_model_score"] == 0.0 and saved["best_model_path"] == str(best)
    else:  # nothing to point at: the callback starts afresh, as Lightning's does
        assert (resumed / "best.ckpt").is_file()
        assert saved["best_model_path"] == str(resumed / "best.ckpt") and saved["best_model_score"] > 0


def test_a_moved_run_resumes_with_its_best_checkpoint_where_it_was_moved(tmp_path, fit_tiny):
    _unbeatable(fit_tiny(tmp_path / "first"))
    fit_tiny(tmp_path / "first", "--ckpt_path", "last", "--trainer.max_steps", "18")  # best stays in version_0
    shutil.move(tmp_path / "first", tmp_path / "moved")  # its record names the folders it left
    logs = tmp_path / "moved/lightning_logs"
    fit_tiny(
        tmp_path / "moved", "--ckpt_path", str(logs / "version_1/checkpoints/last.ckpt"), "--trainer.max_steps", "24"
    )
    assert not (logs / "version_2/checkpoints/best.ckpt").exists()
    record = _monitoring_state(torch.load(logs / "version_2/checkpoints/last.ckpt", weights_only=True))
    assert record["best_model_path"] == str(logs / "version_0/checkpoints/best.ckpt")


def test_a_fit_resumed_on_another_validation_set_starts_its_best_afresh(tmp_path, fit_tiny):
    _unbeatable(fit_tiny(tmp_path))  # validated on all 200 lines of val.smi
    with pytest.warns(UserWarning, match="validation set is not the resumed run's"):
        fit_tiny(tmp_path, "--ckpt_path", "last", "--trainer.max_steps", "18", "--data.val_size", "100")
    resumed = tmp_path / "lightning_logs/version_1/checkpoints"
    assert (resumed / "best.ckpt").is_file()
    record = _resumed_record(tmp_path)
    assert record["best_model_path"] == str(resumed / "best.ckpt") and record["best_model_score"] > 0


def test_resuming_on_another_number_of_processes_says_the_epoch_is_dealt_anew(tmp_path, fit_tiny):
    last = fit_tiny(tmp_path)
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["world_size"] == 1
    checkpoint["world_size"] = 2  # as a two-process fit writes it
    torch.save(checkpoint, last)
    with pytest.warns(UserWarning, match="trained on 2 processes and resumes on 1: the rest of its epoch is dealt"):
        fit_tiny(tmp_path, "--ckpt_path", "last", "--trainer.max_steps", "13")


def test_a_fit_goes_on_from_the_best_checkpoint_as_from_last(tmp_path, fit_tiny, caplog):
    last = fit_tiny(tmp_path, "--trainer.max_steps", "6")  # one validation: best.ckpt at step 6
    best = last.with_name("best.ckpt")
    assert torch.load(best, map_location="cpu", weights_only=True)["global_step"] == 6
    with caplog.at_level(logging.INFO):  # Lightning's own "best" needs a run in this process
        fit_tiny(tmp_path, "--ckpt_path", "best", "--trainer.max_steps", "12")  # saved at its validation
    assert f"resuming from {best}" in caplog.text
    resumed = torch.load(tmp_path / "lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    assert resumed["global_step"] == 12


def test_a_fit_ending_between_validations_keeps_its_last_steps(tmp_path, fit_tiny):
    # tiny.yaml validates every 6 steps: steps 7 and 8 would be lost under Lightning 2.5, which saves
    # last.ckpt only at validations and its intervals.
    last = fit_tiny(tmp_path, "--trainer.max_steps", "8")
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 8
