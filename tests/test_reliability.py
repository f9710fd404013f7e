"""Dirty data, user errors, bad checkpoints and numerical faults: one clear line each, nothing silent."""

import argparse
import csv
import inspect
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI

import polydiff
from polydiff import DiffusionTask
from polydiff.cli import main
from polydiff.commands.sample import main as sample_main
from polydiff.data.token_cache import token_cache
from polydiff.tasks.diffusion_task import FORBIDDEN_LOGIT

ROOT = Path(__file__).parents[1]
BASE = str(ROOT / "recipes" / "base.yaml")
TINY = str(Path(__file__).parent / "configs" / "tiny.yaml")


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def dirty_file(tmp_path, moses_sample) -> Path:
    """Windows line endings; 400 good molecules and one line of each kind of trouble."""
    bad = [b"", b"# exported by some tool", b"CC\xff\xfeO", b"C1CC(", b"CC[Xe]C", b"C" * 200]
    lines = [s.encode() for s in moses_sample[:200]] + bad + [s.encode() for s in moses_sample[200:400]]
    path = tmp_path / "dirty.smi"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    return path


def one_error_line(capsys, code: int, run) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    return lines[-1]


def fit_args(tmp_path: Path, train: Path, *extra: str) -> list[str]:
    return ["fit", "-c", BASE, "-c", TINY, "--data.train_file", str(train), "--data.val_size", "50",
            "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "4", *extra]  # fmt: skip


# The lines path (data.token_cache false) screens as a cache is built: the same lines kept, the same summary.
CACHING = pytest.mark.parametrize("caching", [[], ["--data.token_cache", "false"]], ids=["cache", "lines"])


@CACHING
def test_dirty_corpus_trains_and_the_skipped_lines_are_summarised_by_reason(tmp_path, dirty_file, caplog, caching):
    caplog.set_level(logging.INFO)  # the summary is Lightning's rank-zero info: stderr, or pytest's log capture
    main(fit_args(tmp_path, dirty_file, *caching))
    summary = next(line for line in caplog.text.splitlines() if "data: train" in line)
    assert "400 of 406 lines kept" in summary
    for reason in ("1 empty", "1 comment", "1 not UTF-8", "1 invalid SMILES", "1 unknown token", "1 too long"):
        assert reason in summary, summary
    assert "line 204: 'C1CC('" in summary  # where the first of each reason is
    cache = token_cache(dirty_file, "selfies", 64, "selfies")
    assert sum(cache.dropped.values()) == 6 and len(cache) == 400  # none truncated: dropped or whole
    assert "`max_steps=4` reached" in caplog.text  # it trained on the 400 good lines


@CACHING
def test_on_bad_line_error_names_the_file_and_the_first_bad_line(tmp_path, dirty_file, capsys, caching):
    run = partial(main, fit_args(tmp_path, dirty_file, "--data.on_bad_line", "error", *caching))
    error = one_error_line(capsys, 1, run)
    assert str(dirty_file) in error and "line 201: empty" in error
    tokens = tmp_path / "cache" / "tokens"
    assert not tokens.exists() or not list(tokens.iterdir())  # no cache, and no half-built one


@pytest.mark.parametrize(
    "options",
    [
        ["--data.num_samples", "50"],
        ["--model.sample_every_n_validations", "0", "--model.val_num_samples", "50"],
        ["--model.sampling.strategy", "confidence"],  # a draft-head model decodes speculatively
    ],
    ids=["data option", "model option", "sampling option"],
)
def test_options_are_refused_before_the_data_is_prepared(tmp_path, dirty_file, capsys, options):
    one_error_line(capsys, 1, lambda: main(fit_args(tmp_path, dirty_file, *options)))
    assert not (tmp_path / "cache").exists()  # no token cache was built: a large corpus takes minutes


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("", "empty.smi", "no usable line (empty file)"),
        ("\n# only a comment\nC1CC(\n", "bad.smi", "no usable line (1 empty"),
        ("name,smiles\na,CCO\n", "corpus.csv", "no column 'SMILES'"),
    ],
    ids=["empty", "nothing usable", "csv without the column"],
)
def test_unusable_files_are_one_line_naming_the_file(tmp_path, capsys, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    error = one_error_line(capsys, 1, lambda: main(fit_args(tmp_path, path)))
    assert str(path) in error and message in error


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--trainer.max_steps", "abc"], 2, "--trainer.max_steps abc: expected an integer"),
        (["--model.no_such_key", "1"], 2, "nrecognized arguments: --model.no_such_key"),  # jsonargparse: U or u
        (["-c", "missing.yaml"], 2, "File does not exist"),
        (["--data.train_file", "missing.smi"], 1, "data file not found: missing.smi"),
        (["--data.val_file", "."], 1, "data file . is a folder: give a file"),
        (["--ckpt_path", "missing.ckpt"], 1, "checkpoint not found: missing.ckpt"),
        (["--trainer.max_steps", "-5"], 1, "MisconfigurationException: `max_steps` must be"),  # Lightning's own
        (["--ckpt_path", "."], 1, ". is a folder: give the checkpoint file in it"),
        (["--trainer.precision", "16-mixed", "--trainer.accelerator", "cpu"], 1, "16-mixed (float16 autocast) needs"),
        (["--trainer.precision", "16-true"], 1, "16-true: AdamW cannot train float16 weights (its eps rounds"),
        pytest.param(
            ["--trainer.accelerator", "cuda"],
            1,
            "trainer.accelerator cuda: this machine has no CUDA device; to run processes on its CPU, give",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA"),
        ),
        (["--trainer.max_steps", "0"], 1, "trainer.max_steps 0 trains nothing"),
        (
            ["--trainer.callbacks+=polydiff.SampleWriter", "--trainer.callbacks.output_file", "s.smi"],
            1,
            "trainer.callbacks: SampleWriter writes what polydiff predict samples; polydiff fit predicts nothing",
        ),
        (["--trainer.accelerator", "cpu", "--trainer.devices", "-1"], 1, "devices -1 (every GPU) with accelerator cpu"),
        (["--data.max_length", "0"], 1, "data.max_length must be 3 or more"),
        (["--data.max_length", "-5"], 1, "data.max_length must be 3 or more"),
        (["--model.diffusion_config.block_size", "200"], 1, "block_size 200 does not fit in a sequence of"),
        (["--model.model_config.num_heads", "0"], 1, "model_config.num_heads must be at least 1"),
        (["--data.bucket_window", "0"], 1, "data.bucket_window must be at least 1"),
        (["--model.lr_schedule.warmup_steps", "-5"], 1, "lr_schedule.warmup_steps must be >= 0"),
        (["--model.lr_schedule.decay", "constant"], 1, "lr_schedule.decay_over shapes only the cosine decay"),
        (
            ["--trainer.max_steps", "-1", "--trainer.max_epochs", "-1", "--model.lr_schedule.decay_over", "steps"],
            1,
            "lr_schedule.decay cosine decays to the end of training, and this run has none",
        ),
        (["--data.num_samples", "50"], 1, "data.num_samples: the sequences polydiff predict writes"),
        (
            [
                "--model.sample_every_n_validations",
                "0",
                "--model.sampling.top_p",
                "0.9",
                "--model.val_num_samples",
                "50",
            ],
            1,
            "model.sampling and model.val_num_samples (set it back to 200): validation samples nothing",
        ),
        (["--model.diffusion_config.num_timesteps", "10", "--model.diffusion_config.eps", "0.01"], 1, "eps: discrete"),
        (["--model.val_num_samples", "0"], 1, "val_num_samples >= 1"),
        (["--model.kind", "polymer"], 2, "model.kind follows data.kind (the CLI links them): give --data.kind"),
        (["--data.polymers.units_per_class", "10"], 1, "data.polymers builds the polymer corpus: only with"),
        (["--data.smiles_column", "PSMILES"], 1, "data.smiles_column 'PSMILES' names a CSV column"),
        (["--model.sampling.step", "128"], 2, "nrecognized arguments: --model.sampling.step 128"),
    ],
    ids=[
        "wrong type",
        "unknown key",
        "missing config",
        "missing data file",
        "data folder",
        "missing checkpoint",
        "trainer refusal",
        "checkpoint folder",
        "float16 autocast on a CPU",
        "float16 weights",
        "cuda without a GPU",
        "no steps",
        "a sample writer in a fit",
        "every GPU on a CPU",
        "no room for a token",
        "negative length",
        "a block longer than the sequence",
        "no heads",
        "no window",
        "negative warmup",
        "cosine options at a constant rate",
        "a cosine decay with no end",
        "predict's sample count in fit",
        "validation sampling options with it off",
        "eps in discrete time",
        "no validation samples",
        "a linked option",
        "polymer options for molecules",
        "a column of no CSV",
        "an option's prefix",
    ],
)
def test_config_and_path_errors_are_one_line(capsys, args, code, message):
    error = one_error_line(capsys, code, lambda: main(["fit", "-c", BASE, *args]))
    assert error.startswith("polydiff") and message in error


@pytest.mark.parametrize("folder", ["run", "cache"])
def test_a_file_where_a_folder_goes_is_one_line_naming_the_option(tmp_path, capsys, monkeypatch, smiles_files, folder):
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    root, cache = (in_the_way / "run", tmp_path / "cache") if folder == "run" else (tmp_path / "run", in_the_way)
    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(cache))
    data = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
    run = ["fit", "-c", BASE, "-c", TINY, *data, "--trainer.default_root_dir", str(root)]
    error = one_error_line(capsys, 1, lambda: main(run))
    named = f"--trainer.default_root_dir {root}" if folder == "run" else f"POLYDIFF_CACHE_DIR={cache}"
    assert f"{named}: cannot be made a folder (a file is in the way)" in error


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, fit_tiny) -> Path:
    return fit_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize(
    ("stop", "code", "line"),
    [(signal.SIGINT, 130, "interrupted by Ctrl-C"), (signal.SIGTERM, 143, "stopped by SIGTERM")],
    ids=["Ctrl-C", "SIGTERM"],
)
def test_a_stopped_sampling_is_one_line_leaving_its_output_as_it_was(
    tmp_path, capsys, tiny_checkpoint, stop, code, line
):
    output = tmp_path / "samples.smi"
    output.write_text("CCO\n")
    # The signal arrives a second into sampling far more than a second's worth.
    signalling = threading.Timer(1.0, os.kill, (os.getpid(), stop))
    signalling.start()
    try:
        last = one_error_line(capsys, code, lambda: sample_main(
            ["--ckpt_path", str(tiny_checkpoint), "--num_samples", "300000", "--output", str(output)]
        ))  # fmt: skip
    finally:
        signalling.cancel()
    assert last == f"polydiff sample: {line}"
    assert output.read_text() == "CCO\n" and [p.name for p in tmp_path.iterdir()] == ["samples.smi"]


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory, tiny_checkpoint) -> dict[str, Path]:
    """A truncated real checkpoint, a PyTorch file of something else, and one that needs code to load."""
    folder = tmp_path_factory.mktemp("bad")
    data = tiny_checkpoint.read_bytes()
    paths = {name: folder / f"{name}.ckpt" for name in ("truncated", "foreign", "pickled_code")}
    paths["truncated"].write_bytes(data[: len(data) // 2])
    torch.save({"weights": torch.zeros(3)}, paths["foreign"])
    torch.save({"state_dict": {"model.bert.x": torch.zeros(1)}, "hook": print}, paths["pickled_code"])
    return paths


@pytest.mark.parametrize("kind", ["truncated", "foreign", "pickled_code"])
def test_bad_checkpoints_are_one_clear_error_everywhere(tmp_path, capsys, bad_checkpoints, smiles_files, kind):
    path = str(bad_checkpoints[kind])
    sample = ["--ckpt_path", path, "--num_samples", "2", "--output", str(tmp_path / "out.smi")]
    assert path in one_error_line(capsys, 1, lambda: sample_main(sample))
    files = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
    validate = ["validate", "-c", BASE, "-c", TINY, *files, "--ckpt_path", path]
    assert path in one_error_line(capsys, 1, lambda: main(validate))
    with pytest.raises(ValueError, match="polydiff checkpoint"):
        DiffusionTask.load_from_checkpoint(path)
    assert not (tmp_path / "out.smi").exists()


def test_weights_that_do_not_fit_the_model_are_one_line_counting_them(tmp_path, capsys, tiny_checkpoint, smiles_files):
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    layer = [key for key in state["state_dict"] if ".encoder.layer.0." in key]
    for key in layer:
        del state["state_dict"][key]
    partial = tmp_path / "partial.ckpt"
    torch.save(state, partial)
    sample = ["--ckpt_path", str(partial), "--num_samples", "2", "--output", str(tmp_path / "out.smi")]
    error = one_error_line(capsys, 1, lambda: sample_main(sample))
    assert f"{partial}: its weights do not fit this model: {len(layer)} missing (first: {layer[0]})" in error
    files = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
    validate = ["validate", "-c", BASE, "-c", TINY, *files, "--ckpt_path", str(partial)]
    assert f"{len(layer)} missing" in one_error_line(capsys, 1, lambda: main(validate))


def test_a_checkpoint_is_scored_on_data_read_as_it_was_trained(tmp_path, capsys, tiny_checkpoint, smiles_files):
    files = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
    run = ["-c", BASE, "-c", TINY, *files, "--trainer.default_root_dir", str(tmp_path)]
    trained = [*run, "--ckpt_path", str(tiny_checkpoint)]
    validate = ["validate", *trained, "--data.representation", "kekule_smiles"]
    error = one_error_line(capsys, 1, lambda: main(validate))
    assert "trained with data.representation smiles, not kekule_smiles" in error
    # So would a length limit or conditions other than its own: they shape the model, not only the data.
    error = one_error_line(capsys, 1, lambda: main(["validate", *trained, "--data.max_length", "32"]))
    assert "trained with data.max_length 64, not 32: give --data.max_length 64 (or the -c files" in error
    error = one_error_line(capsys, 1, lambda: main(["validate", *trained, "--data.conditions", "[qed]"]))
    assert "trained with data.conditions [], not ['qed']" in error
    # A model trained on one's own files is tested on a test file of that corpus, never MOSES's unasked.
    assert "set data.test_file" in one_error_line(capsys, 1, lambda: main(["test", *trained]))
    # LightningCLI drops what predict returns: without a writer nothing would be kept.
    error = one_error_line(capsys, 1, lambda: main(["predict", *trained, "--data.num_samples", "4"]))
    assert "--trainer.callbacks+=polydiff.SampleWriter" in error
    # Without a checkpoint it scores the initial weights, and says so.
    with pytest.warns(UserWarning, match="validate without --ckpt_path runs the freshly initialised weights"):
        main(["validate", *run])


def test_model_options_given_with_a_checkpoint_give_way_to_its_own(tmp_path, capsys, tiny_checkpoint, smiles_files):
    files = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
    validate = ["validate", "-c", BASE, "-c", TINY, *files, "--trainer.default_root_dir", str(tmp_path)]
    validate += ["--ckpt_path", str(tiny_checkpoint), "--model.model_config.intermediate_size", "128"]  # tiny: 64
    if hasattr(LightningCLI, "_parse_ckpt_path"):  # Lightning >= 2.6 reads the model from the checkpoint
        with pytest.warns(UserWarning, match=r"replace the given model.model_config.intermediate_size \(128 -> 64\)"):
            main(validate)
        # What only a fit uses (the optimizer, its schedule) changes nothing when validating: refused.
        refused = one_error_line(capsys, 1, lambda: main([*validate[:-2], "--model.lr_schedule.warmup_steps", "7"]))
        assert "--model.lr_schedule.warmup_steps: polydiff validate trains nothing" in refused
        # Without -c files nothing was given: the classes' defaults (block_size 0, two layers) go unnamed ...
        bare = ["validate", *files, "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(tiny_checkpoint)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            main([*bare, "--trainer.limit_val_batches", "1"])
        assert not [w for w in caught if "replace the given" in str(w.message)]
        # ... unless named on the command line, at the default value too.
        with pytest.warns(UserWarning, match=r"replace the given model.model_config.num_layers \(2 -> 1\)$"):
            main([*bare, "--trainer.limit_val_batches", "1", "--model.model_config.num_layers", "2"])
    else:  # Lightning 2.5 builds the model from the config, which the weights then do not fit
        assert "of another shape" in one_error_line(capsys, 1, lambda: main(validate))


def test_a_runs_own_settings_given_with_a_checkpoint_are_kept(tmp_path, capsys, tiny_checkpoint, smiles_files):
    # A checkpoint written before they stayed out of checkpoints: its run sampled nothing and stopped at a NaN.
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    state["hyper_parameters"] |= {"sample_every_n_validations": 0, "on_nonfinite_loss": "stop", "compile": False}
    older = tmp_path / "older.ckpt"
    torch.save(state, older)
    files = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
    validate = ["validate", "-c", BASE, "-c", TINY, *files, "--trainer.default_root_dir", str(tmp_path)]
    validate += ["--ckpt_path", str(older), "--model.sample_every_n_validations", "1", "--model.val_num_samples", "20"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main([*validate, "--model.sampling.temperature", "0.5"])
    assert not [w for w in caught if "replace the given" in str(w.message)]
    assert "val/valid" in capsys.readouterr().out  # `polydiff validate` samples, as the given options ask
    # Options a command has no use for are refused: validate trains nothing, a test samples nothing.
    refused = one_error_line(capsys, 1, lambda: main([*validate, "--model.on_nonfinite_loss", "skip"]))
    assert "--model.on_nonfinite_loss: polydiff validate trains nothing" in refused
    test = [*validate, "--data.test_file", str(smiles_files["val"])]
    test[0] = "test"
    refused = one_error_line(capsys, 1, lambda: main(test))
    assert "--model.sample_every_n_validations: polydiff test scores the bound alone and samples nothing" in refused
    bound = ["test", *validate[1:-4], "--data.test_file", str(smiles_files["val"]), "--model.sampling.temperature", "1"]
    refused = one_error_line(capsys, 1, lambda: main(bound))  # validate[-4:]: the validation-sampling options
    assert "model.sampling: polydiff test scores the bound alone and samples nothing" in refused


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data.global_batch_size", "64", "--trainer.accumulate_grad_batches", "3"], "not both"),
        (["--model.sampling.strategy", "ancestral"], "strategy ancestral: a draft head's model decodes speculatively"),
        (["--model.sampling.temperature", "0.5", "--model.sample_every_n_validations", "0"], "samples nothing"),
        # At its default value, but given: polydiff sample refuses it so, and so does the CLI.
        (["--model.sampling.steps", "128"], "steps: speculative decoding makes one model call per committed run"),
    ],
    ids=[
        "two batch settings",
        "a strategy the model cannot use",
        "sampling options without samples",
        "an option at its default the model would ignore",
    ],
)
def test_run_options_that_would_be_overruled_or_ignored_stop_before_the_first_step(
    tmp_path, capsys, smiles_files, args, message
):
    error = one_error_line(capsys, 1, lambda: main(fit_args(tmp_path, smiles_files["train"], *args)))
    assert message in error
    assert not list((tmp_path / "run").glob("**/*.ckpt"))


def test_a_printed_config_runs_again_and_a_config_file_counts_by_value(tmp_path, capsys, smiles_files):
    """``--print_config`` writes every sampling option at its default; the file runs as it is (the
    README's ``fit -c my_run.yaml``). A -c file's sampling option that differs from its default and
    that the model would ignore is refused, as on the command line."""
    with pytest.raises(SystemExit) as printed:
        main([*fit_args(tmp_path, smiles_files["train"]), "--print_config"])
    assert printed.value.code in (0, None)
    config = tmp_path / "my_run.yaml"
    config.write_text(capsys.readouterr().out)
    assert "steps: 128" in config.read_text()  # an option the default model takes no part of
    main(["fit", "-c", str(config), "--trainer.max_steps", "1"])
    ignored = tmp_path / "sampling.yaml"
    ignored.write_text("model:\n  sampling:\n    steps: 64\n")
    args = fit_args(tmp_path, smiles_files["train"], "-c", str(ignored))
    assert "steps: speculative decoding makes one model call" in one_error_line(capsys, 1, lambda: main(args))


def test_a_model_trains_in_bfloat16_throughout(tmp_path, smiles_files):
    # Six steps: a validation (tiny.yaml's interval) and so a checkpoint under every Lightning version.
    main(fit_args(tmp_path, smiles_files["train"], "--trainer.precision", "bf16-true", "--trainer.max_steps", "6"))
    state = torch.load(next((tmp_path / "run").glob("**/last.ckpt")), map_location="cpu", weights_only=True)
    assert state["global_step"] == 6
    assert state["state_dict"]["model.bert.embeddings.word_embeddings.weight"].dtype == torch.bfloat16


def test_the_bound_is_averaged_in_float32_when_the_module_is_bfloat16():
    task = DiffusionTask().to(torch.bfloat16)  # as bf16-true leaves it, its metrics' states included
    task.on_validation_epoch_start()
    value = torch.tensor(3.85, dtype=torch.bfloat16).float()  # a validation batch's mean NLL
    for _ in range(63):
        task.val_nll.update(value, weight=torch.tensor(1300))
    assert task.val_nll.compute().item() == pytest.approx(value.item(), rel=1e-6)  # a bfloat16 sum: 3.6875


def test_nonfinite_loss_stops_naming_the_step_or_is_skipped(smiles_files):
    from polydiff.data.batching import MoleculeCollator

    task = DiffusionTask(representation="selfies")
    batch = MoleculeCollator("selfies", 128, "selfies")(smiles_files["train"].read_text().split()[:8])
    with torch.no_grad():
        task.model.output_projection[3].bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"non-finite training loss .* at step 0"):
        task.training_step(batch, 0)
    task.on_nonfinite_loss = "skip"
    assert task.training_step(batch, 0) is None and task.skipped_steps == 1
    # The count goes on across a resume.
    checkpoint = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(checkpoint)
    resumed = DiffusionTask(representation="selfies")
    resumed.trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    resumed.trainer.state.fn = "fit"
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.skipped_steps == 1


def test_a_diverging_fit_stops_with_one_line(tmp_path, capsys, smiles_files):
    files = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
    args = ["fit", "-c", BASE, "-c", TINY, *files, "--trainer.default_root_dir", str(tmp_path)]
    args += ["--model.optimizer.init_args.lr", "1e30", "--trainer.gradient_clip_val", "null"]
    error = one_error_line(capsys, 1, lambda: main(args))
    assert "non-finite training loss" in error and "at step" in error


def test_a_skipped_step_logs_its_own_loss(tmp_path, smiles_files):
    files = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
    args = ["fit", "-c", BASE, "-c", TINY, *files, "--trainer.default_root_dir", str(tmp_path)]
    args += ["--model.optimizer.init_args.lr", "1e30", "--trainer.gradient_clip_val", "null"]
    args += ["--model.on_nonfinite_loss", "skip", "--trainer.max_steps", "4", "--trainer.log_every_n_steps", "1"]
    main([*args, "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path)])
    rows = list(csv.DictReader((tmp_path / "lightning_logs/version_0/metrics.csv").open()))
    losses = {row["step"]: (row["train/loss"], row["train/skipped_steps"]) for row in rows if row["train/loss"]}
    assert float(losses["0"][0]) > 0 and not losses["0"][1]  # the first step diverges the weights
    assert [losses[step] for step in "123"] == [("nan", "1.0"), ("nan", "2.0"), ("nan", "3.0")]


def test_masking_constant_is_finite_in_half_precision():
    for dtype in (torch.float16, torch.bfloat16):
        assert torch.isfinite(torch.tensor(FORBIDDEN_LOGIT, dtype=dtype))


def _validated_nll(capsys, root: Path, *args: str) -> float:
    """val/nll of ``polydiff validate`` on the tiny config, logging under ``root``."""
    capsys.readouterr()
    main(["validate", "-c", BASE, "-c", TINY, "--trainer.default_root_dir", str(root), *args])
    return float(re.search(r"val/nll\s*\S\s*([0-9.]+)", capsys.readouterr().out)[1])


def test_validate_finds_a_runs_last_and_best_checkpoints_or_says_there_are_none(
    tmp_path, capsys, tiny_checkpoint, smiles_files
):
    files = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
    # Two runs: one that kept only last.ckpt, one that kept only best.ckpt (of a lower val/nll).
    runs = {name: tmp_path / name / "lightning_logs/version_0/checkpoints" for name in ("last", "best")}
    for name, folder in runs.items():
        folder.mkdir(parents=True)
        shutil.copy(tiny_checkpoint.with_name(f"{name}.ckpt"), folder / f"{name}.ckpt")
    for name in ("last", "best"):
        given = _validated_nll(capsys, tmp_path / "scores", *files, "--ckpt_path", str(runs[name] / f"{name}.ckpt"))
        found = _validated_nll(capsys, tmp_path / name, *files, "--ckpt_path", name)
        assert found == given  # the file itself, not freshly initialised weights
        other = "best" if name == "last" else "last"  # and not the other kind, which that run lacks
        command = ["validate", "-c", BASE, "-c", TINY, *files, "--ckpt_path", name]
        command += ["--trainer.default_root_dir", str(tmp_path / other)]
        error = one_error_line(capsys, 1, partial(main, command))
        assert f"--ckpt_path {name}: no {name}.ckpt under {tmp_path / other}" in error


def test_a_checkpoint_that_needs_code_is_refused_without_torchs_advice_unless_trusted(
    tmp_path, capsys, tiny_checkpoint, smiles_files
):
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    state["notes"] = argparse.Namespace(source="a colleague")  # loading it runs code: not weights-only
    trusted = tmp_path / "trusted.ckpt"
    torch.save(state, trusted)
    files = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
    validate = ["validate", "-c", BASE, "-c", TINY, *files, "--ckpt_path", str(trusted)]
    error = one_error_line(capsys, 1, lambda: main([*validate, "--trainer.default_root_dir", str(tmp_path)]))
    assert "UnpicklingError: Weights only load failed)" in error
    assert "\x1b" not in error and "two options" not in error
    if "weights_only" not in inspect.signature(Trainer.validate).parameters:  # Lightning < 2.6 has no such option
        return
    assert error.endswith("; a file you trust loads with --weights_only false")
    with pytest.raises(ValueError, match=r"Weights only load failed.*; a file you trust loads with weights_only=False"):
        polydiff.load(trusted)
    assert DiffusionTask.load_from_checkpoint(trusted, weights_only=False).conditions == []
    assert polydiff.load(trusted, "cpu", weights_only=False).conditions == []
    sample = ["sample", "--ckpt_path", str(trusted), "--output", str(tmp_path / "s.smi"), "--num_samples", "2"]
    refused = one_error_line(capsys, 1, lambda: main(sample))
    assert refused.endswith("; a file you trust loads with --weights_only false")
    main([*sample, "--weights_only", "false"])
    assert len((tmp_path / "s.smi").read_text().splitlines()) == 2
    trusting = _validated_nll(capsys, tmp_path, *files, "--ckpt_path", str(trusted), "--weights_only", "false")
    assert trusting == _validated_nll(capsys, tmp_path, *files, "--ckpt_path", str(tiny_checkpoint))


def test_a_misspelt_key_in_a_config_file_points_to_the_subcommands_own_help(tmp_path, capsys):
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  model_config:\n    hiden_size: 64\n")
    error = one_error_line(capsys, 2, lambda: main(["fit", "-c", BASE, "-c", str(typo)]))
    assert "unknown option model.model_config.hiden_size" in error and "(options: polydiff fit --help)" in error


def test_the_command_list_describes_each_command_in_full(capsys):
    main(["--help"])
    listing = " ".join(capsys.readouterr().out.split())
    assert "Score a checkpoint (--ckpt_path) on the test set (data.test_file)." in listing
    assert all(f" {command} " in listing for command in ("fit", "validate", "test", "predict", "sample", "evaluate"))
    assert "never run on your" not in listing  # Lightning's docstring, cut at its first line


def test_the_command_list_comes_without_importing_lightning():
    imported = "print('lightning' in sys.modules, 'torch' in sys.modules)"
    listed = f"import sys; from polydiff.__main__ import main; main(); {imported}"
    out = subprocess.run([sys.executable, "-c", listed, "--help"], capture_output=True, text=True, check=True).stdout
    assert "sample" in out and out.splitlines()[-1] == "False False"


def test_validate_without_the_fits_config_scores_what_the_fit_scored(
    tmp_path, capsys, caplog, recwarn, tiny_checkpoint, smiles_files
):
    if not hasattr(LightningCLI, "_parse_ckpt_path"):
        pytest.skip("Lightning < 2.6 reads no model options from --ckpt_path, so neither the data's")
    files = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
    with_config = _validated_nll(capsys, tmp_path, *files, "--ckpt_path", str(tiny_checkpoint))
    # The checkpoint alone: the fit's files, length limit and batches come from it, and are named.
    main(["validate", "--ckpt_path", str(tiny_checkpoint), "--trainer.default_root_dir", str(tmp_path)])
    assert float(re.search(r"val/nll\s*\S\s*([0-9.]+)", capsys.readouterr().out)[1]) == with_config
    assert f"data.val_file {smiles_files['val']}" in caplog.text and "data.max_length 64" in caplog.text
    assert not [w for w in recwarn if "callbacks used to create the checkpoint" in str(w.message)]


@pytest.mark.parametrize(("value", "shows_traceback"), [("0", False), ("false", False), ("", False), ("1", True)])
def test_polydiff_debug_0_keeps_errors_to_one_line(monkeypatch, capsys, value, shows_traceback):
    monkeypatch.setenv("POLYDIFF_DEBUG", value)
    run = ["fit", "-c", BASE, "--data.train_file", "missing.smi"]
    if shows_traceback:
        with pytest.raises(FileNotFoundError, match=r"missing\.smi"):
            main(run)
    else:
        assert "missing.smi" in one_error_line(capsys, 1, lambda: main(run))


def test_a_training_file_changed_since_the_fit_is_said_to_be_when_validating_or_resuming(tmp_path, smiles_files):
    train = tmp_path / "train.smi"
    lines = smiles_files["train"].read_text().splitlines()
    train.write_text("\n".join(lines) + "\n")
    run = ["-c", BASE, "-c", TINY, "--data.train_file", str(train), "--data.val_size", "50"]
    run += ["--trainer.default_root_dir", str(tmp_path)]
    main(["fit", *run])
    checkpoint = str(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt")
    with warnings.catch_warnings(record=True) as caught:  # as it was: nothing said
        warnings.simplefilter("always")
        main(["validate", *run, "--ckpt_path", checkpoint])
        main(["fit", *run, "--ckpt_path", "last", "--trainer.max_steps", "13"])
    assert not [w for w in caught if "has changed" in str(w.message) or "not the resumed run's" in str(w.message)]
    train.write_text("\n".join(reversed(lines)) + "\n")  # the same lines: another 50 held out
    changed = rf"data.train_file {re.escape(str(train))} has changed since the checkpoint was saved: "
    with pytest.warns(UserWarning, match=changed + "validation holds out and scores other lines than the fit's"):
        main(["validate", *run, "--ckpt_path", checkpoint])
    with (
        pytest.warns(UserWarning, match=changed + "the resumed fit reads other lines than the run it continues"),
        pytest.warns(UserWarning, match="the validation set is not the resumed run's"),  # another 50 held out
    ):
        main(["fit", *run, "--ckpt_path", "last", "--trainer.max_steps", "14"])


def test_a_changed_training_file_beside_a_validation_file_is_said_to_change_novelty_alone(tmp_path, smiles_files):
    train = tmp_path / "train.smi"
    lines = smiles_files["train"].read_text().splitlines()
    train.write_text("\n".join(lines) + "\n")
    run = ["-c", BASE, "-c", TINY, "--data.train_file", str(train), "--data.val_file", str(smiles_files["val"])]
    run += ["--trainer.default_root_dir", str(tmp_path)]
    main(["fit", *run])
    train.write_text("\n".join(lines[:-5]) + "\n")
    changed = rf"data.train_file {re.escape(str(train))} has changed since the checkpoint was saved: "
    same = "validation scores data.val_file's lines as before; only its samples' novelty counts other lines"
    with pytest.warns(UserWarning, match=changed + same):
        main(["validate", *run, "--ckpt_path", str(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt")])


@pytest.mark.skipif(not hasattr(LightningCLI, "_parse_ckpt_path"), reason="Lightning 2.5 takes no options from it")
def test_a_validation_given_other_batches_than_the_fits_says_so(tmp_path, tiny_checkpoint, caplog):
    # The README's `validate -c recipes/base.yaml --ckpt_path ...` on a fit whose config set batches of 32.
    run = ["validate", "-c", BASE, "--ckpt_path", str(tiny_checkpoint), "--trainer.default_root_dir", str(tmp_path)]
    other = r"validate scores otherwise than the fit did, with the given data\.batch_size 128 \(the fit's: 32\)"
    replaced = "the checkpoint's model options replace"  # base's BERT: said as before
    with (
        caplog.at_level(logging.INFO),
        pytest.warns(UserWarning, match=replaced),
        pytest.warns(UserWarning, match=other),
    ):
        main([*run, "--trainer.limit_val_batches", "1"])
    (taken,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("--ckpt_path: taking the fit's")]
    assert "data.max_length 64" in taken and "batch_size" not in taken, taken


@pytest.mark.skipif(not hasattr(LightningCLI, "_parse_ckpt_path"), reason="Lightning 2.5 takes no options from it")
def test_a_test_takes_the_fits_data_options_but_not_those_of_its_validation(tmp_path, tiny_checkpoint, caplog):
    test_file = tmp_path / "test.smi"
    test_file.write_text("CCO\nc1ccccc1\nCC(=O)O\n")
    with caplog.at_level(logging.INFO):
        main(["test", "--ckpt_path", str(tiny_checkpoint), "--data.test_file", str(test_file)])
    (taken,) = [r.getMessage() for r in caplog.records if "scoring what the fit scored" in r.getMessage()]
    assert "data.train_file" in taken and "data.batch_size 32" in taken, taken
    assert "val_file" not in taken and "val_size" not in taken, taken  # nothing a test reads
