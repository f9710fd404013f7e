"""End-to-end tests of generation from a checkpoint: ``polydiff sample``, ``polydiff predict``, ``polydiff.load``."""

import os
import re
import stat
import threading
import warnings
from pathlib import Path

import pytest
import torch
from rdkit import Chem

import polydiff
from polydiff.cli import main
from polydiff.commands import one_line_warnings
from polydiff.commands.evaluate import read_samples
from polydiff.commands.sample import _replaced_when_done
from polydiff.data.tokenizer import SMILES_REGEX

ROOT = Path(__file__).parents[1]
BASE = str(ROOT / "recipes" / "base.yaml")
TINY = str(Path(__file__).parent / "configs" / "tiny.yaml")
SELFIES = str(ROOT / "recipes" / "data" / "selfies.yaml")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, fit_tiny) -> Path:
    """A tiny SELFIES model fitted for a few steps on 1,000 MOSES molecules."""
    return fit_tiny(tmp_path_factory.mktemp("fit"), "-c", SELFIES)


@pytest.fixture(scope="module")
def smiles_checkpoint(tmp_path_factory, fit_tiny) -> Path:
    """The same on atom-level SMILES (the default recipe's representation)."""
    return fit_tiny(tmp_path_factory.mktemp("fit_smiles"))


def sample(capsys, checkpoint: Path, output: Path, *args: str) -> str:
    capsys.readouterr()
    main(["sample", "--ckpt_path", str(checkpoint), "--output", str(output), *args])
    return capsys.readouterr().err


def test_sample_writes_one_sequence_per_line_and_a_summary(checkpoint, tmp_path, capsys):
    output = tmp_path / "out" / "samples.smi"
    summary = sample(capsys, checkpoint, output, "--num_samples=30", "--seed=0")
    lines = output.read_text().splitlines()
    assert len(lines) == 30 and all(lines)
    # Even after 12 steps of training, every SELFIES sample is a molecule.
    assert all(Chem.MolFromSmiles(line) is not None for line in lines)
    assert "samples/s" in summary and "NFE" in summary and "seed 0" in summary
    assert "valid: 30 of 30, as RDKit reads them as written" in summary
    # Both counts a user compares: model calls and tokens per sequence ([SEP] counted for a block model).
    nfe = float(re.search(r"NFE per sequence: mean ([0-9.]+)", summary)[1])
    tokens = float(re.search(r"tokens per sequence: mean ([0-9.]+)", summary)[1])
    assert 0 < nfe <= tokens  # a block model commits at least one token per call, [SEP] included


def test_a_fixed_length_counts_the_tokens_asked_for(checkpoint, tmp_path, capsys):
    summary = sample(capsys, checkpoint, tmp_path / "s.smi", "--num_samples=1", "--length=8", "--seed=0")
    # The [SEP] at a fixed length is placed, not written: the count is the length asked for.
    assert "tokens per sequence: mean 8.00" in summary and "wrote 1 sequence to" in summary


@pytest.mark.parametrize("name", ["samples.smi.gz", "samples.csv", "samples.csv.gz"])
def test_an_output_is_written_as_its_name_says_for_evaluate_to_read(checkpoint, tmp_path, capsys, name):
    options = ["--ckpt_path", str(checkpoint), "--num_samples", "6", "--seed", "3"]
    main(["sample", *options, "--output", str(tmp_path / "plain.smi")])
    main(["sample", *options, "--output", str(tmp_path / name)])
    assert read_samples(tmp_path / name) == (tmp_path / "plain.smi").read_text().splitlines()


@pytest.mark.parametrize("command", ["sample", "predict"])
def test_a_pipe_or_device_output_is_written_as_it_is_not_replaced(checkpoint, tmp_path, command):
    # As /dev/null is: moving a finished file into its place would put a file where the device was.
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    read = []
    reader = threading.Thread(target=lambda: read.extend(pipe.read_text().splitlines()), daemon=True)
    reader.start()
    if command == "sample":
        main(["sample", "--ckpt_path", str(checkpoint), "--num_samples", "5", "--output", str(pipe)])
    else:
        main([
            "predict", "-c", BASE, "-c", TINY, "-c", SELFIES, "--ckpt_path", str(checkpoint),
            "--data.num_samples", "5", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.callbacks+=polydiff.SampleWriter", "--trainer.callbacks.output_file", str(pipe),
        ])  # fmt: skip
    reader.join(timeout=60)
    assert stat.S_ISFIFO(pipe.stat().st_mode) and len(read) == 5
    assert not list(tmp_path.glob(".*partial"))


def test_a_linked_output_is_written_through_its_link(checkpoint, tmp_path):
    # As /dev/stdout is when a shell sends it to a file: the link stays, its file gets the samples.
    target, link = tmp_path / "target.smi", tmp_path / "link.smi"
    target.write_text("CCO\n")
    link.symlink_to(target)
    main(["sample", "--ckpt_path", str(checkpoint), "--num_samples", "5", "--output", str(link)])
    assert link.is_symlink() and len(target.read_text().splitlines()) == 5


def test_same_seed_same_file(checkpoint, tmp_path, capsys):
    files = [tmp_path / f"{name}.smi" for name in ("a", "b", "c")]
    for path, seed in zip(files, (5, 5, 6), strict=True):
        sample(capsys, checkpoint, path, "--num_samples=20", f"--seed={seed}")
    assert files[0].read_bytes() == files[1].read_bytes()
    assert files[0].read_bytes() != files[2].read_bytes()


def test_prompt_file_fills_in_every_template(smiles_checkpoint, tmp_path, recwarn):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# benzenes, amides\nc1ccccc1[MASK][MASK]\n\nCC(=O)N[MASK]\n[MASK]C(=O)[MASK]\n")
    output = tmp_path / "filled.smi"
    main(["sample", "--ckpt_path", str(smiles_checkpoint), "--output", str(output), "--num_samples=4",
          f"--prompt_file={prompts}"])  # fmt: skip
    lines = output.read_text().splitlines()
    assert len(lines) == 12  # the comment line and the blank one are no templates
    assert all(line.startswith("c1ccccc1") for line in lines[:4])
    assert all(line.startswith("CC(=O)N") for line in lines[4:8])
    # The leading [MASK] is one token, which may be several characters ("Cl", "[nH]").
    assert all(re.match(f"(?:{SMILES_REGEX})C\\(=O\\)", line) for line in lines[8:])
    # A block model reads a template left to right: where a [MASK] comes before a fixed token, no
    # SMILES rule holds it, and it says so, once.
    (warning,) = [str(w.message) for w in recwarn if w.category is UserWarning]
    assert warning.startswith("templates: this model writes left to right")


def test_a_warning_is_shown_as_one_line():
    with one_line_warnings("polydiff sample"):
        shown = warnings.formatwarning("templates: a note", UserWarning, "generate.py", 42)
    assert shown == "polydiff sample: warning: templates: a note\n"
    assert "generate.py" in warnings.formatwarning("templates: a note", UserWarning, "generate.py", 42)  # restored


def test_a_template_that_fixes_a_start_is_completed_under_the_smiles_rules(
    smiles_checkpoint, tmp_path, capsys, recwarn
):
    output = tmp_path / "filled.smi"
    args = ["sample", "--ckpt_path", str(smiles_checkpoint), "--output", str(output), "--num_samples=20", "--seed=0"]
    prompt = ["--prompt", "c1ccccc1C(=O)N[MASK][MASK][MASK][MASK]"]
    valid = []
    for syntax in ("true", "false"):
        main([*args, *prompt, f"--syntax={syntax}"])
        lines = output.read_text().splitlines()
        assert len(lines) == 20 and all(line.startswith("c1ccccc1C(=O)N") for line in lines)
        valid.append(sum(Chem.MolFromSmiles(line) is not None for line in lines))  # as sampled: strict validity
    assert not [w for w in recwarn if w.category is UserWarning]  # a template the rules hold: nothing to say
    # This model, a few steps old, meets dead ends in four tokens; without the rules it meets more.
    assert valid[0] > valid[1]
    # A start that no SMILES has is refused before any work, in one line.
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main([*args, "--prompt", "CC)[MASK]"])
    assert refused.value.code == 1
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert "prompt 'CC)[MASK]': the SMILES rules the sampler keeps refuse ')' after 'CC'" in error


@pytest.mark.parametrize("content", [None, b"", b"not a checkpoint"], ids=["missing", "empty", "corrupt"])
def test_bad_checkpoint_is_one_clear_error(tmp_path, capsys, content):
    path = tmp_path / "model.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--ckpt_path", str(path), "--num_samples", "2", "--output", str(tmp_path / "new" / "out.smi")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("polydiff sample: error:") and str(path) in err[0]
    assert not (tmp_path / "new").exists()  # the output's folder is made only once the checkpoint loads


def test_the_output_is_never_the_checkpoint_and_may_be_stdout(checkpoint, tmp_path, capsys):
    copy = tmp_path / "model.ckpt"
    copy.write_bytes(checkpoint.read_bytes())
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--ckpt_path", str(copy), "--output", str(copy)])
    assert exit_info.value.code == 1 and "is the checkpoint" in capsys.readouterr().err
    assert copy.read_bytes() == checkpoint.read_bytes()
    main(["sample", "--ckpt_path", str(copy), "--output", "-", "--num_samples=5", "--seed=0"])
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 5 and "wrote 5 sequences to stdout" in err  # the summary stays off stdout
    assert not (tmp_path / "-").exists()


def test_an_interrupted_write_leaves_the_old_output(tmp_path):
    output = tmp_path / "samples.smi"
    output.write_text("CCO\n")
    with pytest.raises(KeyboardInterrupt), _replaced_when_done(output, polymer=False) as file:
        file.write("half a run\n")
        raise KeyboardInterrupt
    assert output.read_text() == "CCO\n" and [p.name for p in tmp_path.iterdir()] == ["samples.smi"]
    with _replaced_when_done(output, polymer=False) as file:
        file.write("CCN\n")
    assert output.read_text() == "CCN\n" and [p.name for p in tmp_path.iterdir()] == ["samples.smi"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--strategy", "greedy"], 2, "--strategy greedy: expected one of speculative, prefix, confidence, ancestral"),
        (["--temprature", "0.5"], 2, "nrecognized arguments: --temprature"),  # jsonargparse: U or u
        (["--num_samples", "abc"], 2, "--num_samples abc: expected an integer"),
        (["--num_samples", "0"], 2, "--num_samples 0: expected an integer above 0"),  # an empty file otherwise
        (["--output", "."], 1, "--output . is a folder: give the file to write"),
        (["--output", str(ROOT / "pyproject.toml" / "samples.smi")], 1, "pyproject.toml is a file, so no folder"),
        (["--output", "/proc/samples.smi"], 1, "--output /proc/samples.smi: cannot write there"),
        (["--output", "samples.sdf"], 1, "--output samples.sdf: samples are SMILES lines, written under a name in"),
        (["--num_threads", "0"], 2, "--num_threads 0: expected an integer above 0 or null"),
        (["--ckpt_path", "last"], 1, "--ckpt_path last: polydiff sample takes the checkpoint file, e.g. runs/"),
        # Asked for by name, an option must matter even at its default value.
        (["--syntax", "true"], 1, "syntax: the constraints apply to SMILES, and this model writes another"),
        (["--steps", "128"], 1, "steps: speculative decoding makes one model call per committed run"),
        (["--step", "128"], 2, "nrecognized arguments: --step 128"),  # a prefix would slip past the check above
    ],
    ids=[
        "unknown strategy",
        "misspelt option",
        "not a number",
        "nothing to sample",
        "output a folder",
        "output under a file",
        "output where nothing can be written",
        "output named as a molfile",
        "no threads",
        "last is for the Lightning commands",
        "SMILES rules asked of a SELFIES model",
        "the default steps asked of speculative decoding",
        "an option's prefix",
    ],
)
def test_bad_options_are_one_line(checkpoint, tmp_path, capsys, args, code, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "out.smi"), *args])
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("polydiff sample: error:") and message in err[0]


def test_selfies_templates_keep_their_atoms(checkpoint, tmp_path, capsys):
    output = tmp_path / "amides.smi"
    sample(capsys, checkpoint, output, "--num_samples=10", "--prompt=[C][C][=Branch1][C][=O][N][MASK][MASK][MASK]")
    amide = Chem.MolFromSmarts("[#6]~[#6](=[#8])~[#7]")  # "~": a ring closing over them may make them aromatic
    molecules = [Chem.MolFromSmiles(line) for line in output.read_text().splitlines()]
    assert len(molecules) == 10 and all(m is not None and m.HasSubstructMatch(amide) for m in molecules)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("[C][C][O]", "has no [MASK] token to fill in"), ("CC[MASK]", "has pieces the tokenizer does not know")],
)
def test_bad_prompt_is_one_clear_error(checkpoint, tmp_path, capsys, prompt, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "out.smi"), "--prompt", prompt])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"polydiff sample: error: ValueError: prompt {prompt!r}") and message in err


def test_a_bad_template_for_a_block_model_is_its_error_alone(smiles_checkpoint, tmp_path, capsys):
    # A valid template on this model draws a warning about templates; a bad one is refused before it.
    with pytest.raises(SystemExit):
        main(["sample", "--ckpt_path", str(smiles_checkpoint), "--output", str(tmp_path / "o.smi"), "--prompt", "CCO"])
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err == "polydiff sample: error: ValueError: prompt 'CCO' has no [MASK] token to fill in"


def test_checkpoints_without_a_token_count_still_load(checkpoint, tmp_path):
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert int(state["state_dict"].pop("tokens_seen")) > 0
    older = tmp_path / "older.ckpt"
    torch.save(state, older)
    task = polydiff.load(older, device="cpu")
    assert int(task.tokens_seen) == 0 and task.length_histogram.sum() == 1000


def test_checkpoints_with_earlier_option_names_still_load(checkpoint, tmp_path, capsys):
    # Written before sample_every_n_epochs became sample_every_n_validations and order_skew went.
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hparams = state["hyper_parameters"]
    hparams["sample_every_n_epochs"] = 3  # a run setting, which checkpoints no longer keep
    hparams["diffusion_config"]["order_skew"] = 0.0
    older = tmp_path / "older.ckpt"
    torch.save(state, older)
    assert polydiff.load(older, device="cpu").sample_every_n_validations == hparams["sample_every_n_epochs"]
    main(["validate", "-c", BASE, "-c", TINY, "-c", SELFIES, "--ckpt_path", str(older),
          "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert "val/nll" in capsys.readouterr().out
    hparams["diffusion_config"]["order_skew"] = 0.5  # a model that needs the removed sampler: refused
    torch.save(state, older)
    with pytest.raises(ValueError, match="order_skew"):
        polydiff.load(older, device="cpu")


def test_checkpoints_with_options_that_changed_nothing_still_load(checkpoint, tmp_path, capsys):
    # Saved before a constant learning rate refused the cosine decay's options, and validation
    # without samples refused a sample count: dropped on loading, as they changed nothing.
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hparams = state["hyper_parameters"]
    hparams["lr_schedule"] |= {"decay": "constant", "min_lr_ratio": 0.5, "decay_over": "steps_or_time"}
    hparams |= {"sample_every_n_validations": 0, "val_num_samples": 50}
    older = tmp_path / "older.ckpt"
    torch.save(state, older)
    task = polydiff.load(older, device="cpu")
    assert (task.lr_schedule.decay, task.lr_schedule.min_lr_ratio, task.val_num_samples) == ("constant", 0.1, 200)
    main(["validate", "-c", BASE, "-c", TINY, "-c", SELFIES, "--ckpt_path", str(older),
          "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert "val/nll" in capsys.readouterr().out


def test_checkpoints_of_the_wide_smiles_vocabulary_still_load(tmp_path_factory, fit_tiny, capsys):
    # Before ``smiles`` became the common vocabulary, its 1,467 tokens were the default: such a
    # checkpoint says tokenizer_name None and has 1,467 embeddings.
    root = tmp_path_factory.mktemp("fit_wide")
    wide = fit_tiny(root, "--data.tokenizer_name", "smiles_full")
    state = torch.load(wide, map_location="cpu", weights_only=True)
    assert state["state_dict"]["model.bert.embeddings.word_embeddings.weight"].shape[0] == 1467
    state["hyper_parameters"]["tokenizer_name"] = None
    older = root / "older.ckpt"
    torch.save(state, older)
    task = polydiff.load(older, device="cpu")
    assert len(task.tokenizer) == 1467 and len(task.sample(4, seed=0)) == 4
    main(["validate", "-c", BASE, "-c", TINY, "--ckpt_path", str(older), "--trainer.default_root_dir", str(root)])
    assert "val/nll" in capsys.readouterr().out


def test_options_come_from_the_method_and_a_prompt_stays_text():
    from polydiff.commands.sample import build_parser

    parser = build_parser()
    options = parser.parse_args(["--ckpt_path", "x", "--output", "y", "--prompt", "[MASK]", "--length", "7"])
    assert options.prompt == "[MASK]"  # as text: YAML would read a list
    assert (options.length, options.num_samples) == (7, 1000)  # DiffusionTask.sample's declaration
    assert "sequences denoised together" in parser.format_help()  # and its help


def test_a_repeat_unit_template_for_a_molecule_model_is_warned_of(smiles_checkpoint):
    task = polydiff.load(smiles_checkpoint, device="cpu")
    with pytest.warns(UserWarning, match=r"templates with two \* are polymer repeat units, and this model writes mol"):
        task.sample(2, prompt="*CC[MASK][MASK]*", seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task.sample(2, prompt="CC[MASK][MASK]*", seed=0)  # one *: a molecule with an atom of any kind
    assert not any("repeat units" in str(warning.message) for warning in caught)


def test_load_gives_an_eval_task_that_samples(checkpoint):
    task = polydiff.load(checkpoint, device="cpu:0")  # the CPU by its index, as torch names it too
    assert not task.training and task.device == torch.device("cpu")
    assert task.length_histogram.sum() == 1000
    samples = task.sample(8, seed=0)
    assert len(samples) == 8 and all(isinstance(s, str) and s for s in samples)
    # The list carries what its sequences cost, as `polydiff sample` reports it.
    assert samples.nfe.shape == samples.lengths.shape == (8,) and (samples.nfe > 0).all() and samples.seed == 0
    assert samples == task.sample(8, seed=0) and samples.samples_per_s > 0


@pytest.mark.parametrize("name", ["predicted.smi", "predicted.csv.gz"])
def test_predict_writes_samples_through_the_prediction_writer(checkpoint, tmp_path, name):
    output = tmp_path / name
    main([
        "predict", "-c", BASE, "-c", TINY, "-c", SELFIES, "--ckpt_path", str(checkpoint), "--data.num_samples", "40",
        "--model.sampling.top_p", "0.95", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.callbacks+=polydiff.SampleWriter", "--trainer.callbacks.output_file", str(output),
    ])  # fmt: skip
    lines = read_samples(output)  # as polydiff evaluate reads it
    assert len(lines) == 40 and all(lines)


def test_an_interrupted_prediction_leaves_the_file_it_would_replace(smiles_checkpoint, tmp_path):
    from lightning.pytorch import Callback, Trainer

    from polydiff.data.datamodule import MoleculeDataModule
    from polydiff.tasks.inference import SampleWriter

    class StopAfterTheFirstBatch(Callback):
        def on_predict_batch_end(self, *args, **kwargs):
            raise RuntimeError("stopped")

    output = tmp_path / "predicted.smi"
    output.write_text("earlier\n")
    task = polydiff.load(smiles_checkpoint)
    data = MoleculeDataModule(num_samples=40, batch_size=8)
    writer = SampleWriter(str(output))
    trainer = Trainer(callbacks=[writer, StopAfterTheFirstBatch()], logger=False, default_root_dir=tmp_path)
    with pytest.raises(RuntimeError, match="stopped"):
        trainer.predict(task, datamodule=data)
    assert output.read_text() == "earlier\n" and sorted(p.name for p in tmp_path.iterdir()) == ["predicted.smi"]
    trainer = Trainer(callbacks=[writer], logger=False, default_root_dir=tmp_path)
    trainer.predict(task, datamodule=data)
    assert len(output.read_text().splitlines()) == 40
    with pytest.raises(ValueError, match="is a folder: give the file"):
        SampleWriter(str(tmp_path))
    with pytest.raises(ValueError, match=r"output_file .*samples.sdf: samples are SMILES lines"):
        SampleWriter(str(tmp_path / "samples.sdf"))


def test_a_prediction_writer_without_its_file_is_one_short_line(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "-c", BASE, "--ckpt_path", str(checkpoint), "--trainer.callbacks+=polydiff.SampleWriter"])
    assert exit_info.value.code == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    # Not jsonargparse's account of every callback subtype and of the callbacks' whole value.
    assert "trainer.callbacks: polydiff.SampleWriter: " in err and "output_file" in err  # worded by jsonargparse
    assert len(err) < 250


def test_unconstrained_samples_that_fail_to_parse_are_counted_not_logged(smiles_checkpoint, tmp_path, capfd):
    from rdkit import RDLogger

    RDLogger.EnableLog("rdApp.*")  # as in a fresh process: nothing has silenced RDKit yet
    main(["sample", "--ckpt_path", str(smiles_checkpoint), "--output", str(tmp_path / "free.smi"),
          "--num_samples=20", "--seed=0", "--syntax=false"])  # fmt: skip
    captured = capfd.readouterr()
    lines = (tmp_path / "free.smi").read_text().splitlines()
    invalid = sum(Chem.MolFromSmiles(line) is None for line in lines if line)
    assert invalid > 0  # a tiny model without the rules writes strings RDKit refuses
    assert f"valid: {20 - invalid - lines.count('')} of 20" in captured.err
    assert "SMILES Parse Error" not in captured.err and "SMILES Parse Error" not in captured.out


def test_a_printed_sample_config_runs_again(smiles_checkpoint, tmp_path, capsys):
    """Every sampling option is printed at its default, among them some the default model ignores:
    in a -c file they count by value, so the file runs as it is."""
    args = ["sample", "--ckpt_path", str(smiles_checkpoint), "--output", str(tmp_path / "a.smi"), "--num_samples=4"]
    with pytest.raises(SystemExit):
        main([*args, "--print_config"])
    config = tmp_path / "sample.yaml"
    config.write_text(capsys.readouterr().out)
    assert "steps: 128" in config.read_text()
    main(["sample", "-c", str(config)])
    assert len((tmp_path / "a.smi").read_text().splitlines()) == 4
