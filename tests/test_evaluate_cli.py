"""End-to-end tests of ``polydiff evaluate`` through the CLI's ``main([...])``, on tiny reference files."""

import gzip
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from polydiff.cli import main
from polydiff.data.files import bundled_moses_path
from polydiff.utils.files import read_smiles

MOSES_KEYS = {"valid", "unique@1000", "unique@10000", "FCD/Test", "SNN/Test", "Frag/Test", "Scaf/Test"}
MOSES_KEYS |= {"IntDiv", "IntDiv2", "Filters", "logP", "SA", "QED", "weight", "Novelty"}
SCAFFOLD_KEYS = {"FCD/TestSF", "SNN/TestSF", "Frag/TestSF", "Scaf/TestSF"}


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def files(tmp_path, moses_sample):
    """samples.smi (valid, repeated, invalid and empty lines) and small reference files."""
    paths = {name: tmp_path / f"{name}.smi" for name in ("samples", "test", "scaffolds", "train")}
    paths["samples"].write_text("\n".join([*moses_sample[:40], moses_sample[0], "", "C1CC", *moses_sample[200:210]]))
    paths["test"].write_text("\n".join(moses_sample[300:360]) + "\n")
    paths["scaffolds"].write_text("\n".join(moses_sample[400:450]) + "\n")
    paths["train"].write_text("\n".join(moses_sample[:20]) + "\n")
    return paths


def run(*args: str) -> None:
    main(["evaluate", *(str(arg) for arg in args)])


def test_evaluate_writes_moses_metrics_and_report(files, tmp_path, capsys):
    output = tmp_path / "report"
    references = ["--reference", files["test"], "--train", files["train"], "--test_scaffolds", files["scaffolds"]]
    run("--samples", files["samples"], "--output", output, *references, "--n_jobs", 1, "--device", "cpu")
    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics) == MOSES_KEYS | SCAFFOLD_KEYS
    assert metrics["valid"] == pytest.approx(51 / 53)
    assert metrics["unique@1000"] == pytest.approx(50 / 51)
    assert metrics["Novelty"] == pytest.approx(30 / 50)  # 20 of the 50 distinct molecules are in train.smi
    assert all((output / name).stat().st_size > 1000 for name in ("properties.png", "molecules.png"))
    printed = capsys.readouterr().out
    assert "FCD/Test" in printed and "53 samples, 51 valid" in printed and "metrics.json" in printed
    assert "unique@10000 is computed on all 51 valid samples" in printed


def test_bundled_references_ship_with_polydiff(tmp_path, moses_sample):
    """The default references are the bundled MOSES sets: their statistics ship in the package, and
    the training set is compared as written, so a first run computes and caches nothing."""
    samples = tmp_path / "samples.smi"
    train_lines = read_smiles(bundled_moses_path("train"))[:10]
    samples.write_text("\n".join([*moses_sample[:30], *train_lines]) + "\n")
    run("--samples", samples, "--output", tmp_path / "report", "--n_jobs", 1, "--device", "cpu")
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert set(metrics) == MOSES_KEYS
    assert metrics["Novelty"] == pytest.approx(30 / 40)  # the 10 training molecules are not novel
    assert metrics["SNN/Test"] < 1  # the training molecules' nearest test neighbours are not themselves
    assert not (tmp_path / "cache").exists()


def test_reference_and_train_can_be_skipped_from_a_config_file(files, tmp_path):
    config = tmp_path / "evaluate.yaml"  # -c, as every polydiff command takes it
    config.write_text(f"samples: {files['samples']}\noutput: {tmp_path}\nreference: none\ntrain: none\n")
    run("-c", config)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"valid", "unique@1000", "unique@10000", "IntDiv", "IntDiv2", "Filters"}


@pytest.mark.parametrize(
    ("name", "text"),
    [("polymer_train.smi", "*CC*\n*CC(*)C\n"), ("polymer_train.csv", "name,PSMILES\nPE,*CC*\nPP,*CC(*)C\n")],
    ids=["line file", "csv with a PSMILES column, as the polymer recipe trains on"],
)
def test_polymer_mode(tmp_path, name, text):
    samples = tmp_path / "polymers.smi"
    samples.write_text("*CC(*)c1ccccc1\n*CC*\nCC*\n*=CC*\n\n*C(*)(*)C\n*CC(*)C(=O)OC\n")
    train = tmp_path / name
    train.write_text(text)
    run("--samples", samples, "--output", tmp_path / "out", "--kind", "polymer", "--train", train)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["polymer_valid"] == pytest.approx(3 / 7)
    assert metrics["valid"] == pytest.approx(6 / 7)
    assert metrics["Novelty"] == pytest.approx(2 / 3)
    assert "FCD/Test" not in metrics and "Filters" not in metrics  # no default reference for polymers


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "samples file not found"), ("", "has no samples"), ("\n\n  \n", "has no samples")],
    ids=["missing", "empty", "blank"],
)
def test_user_errors_are_one_line_and_exit_1(tmp_path, capsys, content, message):
    samples = tmp_path / "samples.smi"
    if content is not None:
        samples.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        run("--samples", samples, "--output", tmp_path / "out")
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_reference_file_fails_before_any_work(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run("--samples", files["samples"], "--output", tmp_path / "out", "--reference", tmp_path / "nope.smi")
    assert exit_info.value.code == 1
    assert f"--reference not found: {tmp_path / 'nope.smi'}" in capsys.readouterr().err


def test_a_training_csv_without_a_smiles_column_fails_before_any_work(files, tmp_path, capsys):
    train = tmp_path / "train.csv"
    train.write_text("mol\nCCO\n")
    with pytest.raises(SystemExit) as exit_info:
        run("--samples", files["samples"], "--output", tmp_path / "out", "--reference", files["test"], "--train", train)
    assert exit_info.value.code == 1
    assert f"--train {train}: no column 'SMILES' or 'PSMILES' (columns: ['mol'])" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # the reference's statistics were not computed first


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--reference", "no line RDKit can parse, so nothing to compare samples with"),
        ("--train", "no line RDKit can parse, so no training set to measure Novelty against"),
    ],
)
def test_a_reference_without_one_molecule_is_an_error_not_na(files, tmp_path, capsys, option, message):
    unusable = tmp_path / "unusable.smi"
    unusable.write_text("C1CC(\nnot a molecule\n")
    with pytest.raises(SystemExit) as exit_info:
        run("--samples", files["samples"], "--output", tmp_path / "out", option, unusable, "--n_jobs", 1)
    assert exit_info.value.code == 1
    assert f"{unusable}: {message}" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], 1, "device"),
        (["--n_jobs", "-2"], 2, "--n_jobs -2: expected an integer above 0 or null"),
        (["--kind", "protein"], 2, "expected one of molecule, polymer"),
        (["--smiles_column", "PSMILES"], 1, "--smiles_column 'PSMILES' names a column of a CSV samples file"),
    ],
    ids=["missing device", "negative jobs", "unknown kind", "a column of no CSV"],
)
def test_bad_options_fail_in_one_line_before_any_work(files, tmp_path, capsys, args, code, message):
    with pytest.raises(SystemExit) as exit_info:
        run("--samples", files["samples"], "--output", tmp_path / "out", *args)
    assert exit_info.value.code == code
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("polydiff evaluate: error:") and message in error[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_an_output_that_is_a_file_is_refused_before_any_work(files, tmp_path, capsys):
    taken = tmp_path / "report"
    taken.write_text("mine")
    with pytest.raises(SystemExit):
        run("--samples", files["samples"], "--output", taken)
    assert "is a file: give the folder" in capsys.readouterr().err
    assert taken.read_text() == "mine" and not (tmp_path / "cache").exists()


def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work(files, tmp_path, capsys):
    taken = tmp_path / "report"
    taken.write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        run("--samples", files["samples"], "--output", taken / "inside")
    assert exit_info.value.code == 1
    assert "cannot make the folder" in capsys.readouterr().err and not (tmp_path / "cache").exists()


def test_samples_of_the_other_kind_are_scored_with_a_note(tmp_path, capsys):
    units, molecules = tmp_path / "units.smi", tmp_path / "molecules.smi"
    units.write_text("*CC*\n*CC(*)c1ccccc1\nCCO\n")
    molecules.write_text("CCO\nc1ccccc1\n")
    none = ["--reference", "none", "--train", "none"]
    run("--samples", units, "--output", tmp_path / "a", *none)
    printed = " ".join(capsys.readouterr().out.split())  # as rich wraps it
    assert "note: 2 valid samples are polymer repeat units (two *): score them with --kind polymer" in printed
    run("--samples", molecules, "--output", tmp_path / "b", "--kind", "polymer", *none)
    assert "molecules are scored with --kind molecule" in " ".join(capsys.readouterr().out.split())


def test_a_polymers_samples_that_are_no_units_are_counted_by_what_they_are(tmp_path, capsys):
    samples = tmp_path / "samples.smi"
    samples.write_text("*CC*\nCCO\n*CC\n*C(*)C*\n")  # a unit, a molecule, one * and three *
    run("--samples", samples, "--output", tmp_path / "out", "--kind", "polymer", "--reference", "none")
    printed = " ".join(capsys.readouterr().out.split())
    assert "note: 1 valid sample is a molecule (no *), not a repeat unit" in printed
    assert "--kind molecule" not in printed  # one sample is a unit: the file is a polymer's
    assert "note: 2 valid samples have a * but are no repeat units" in printed


@pytest.mark.parametrize("option", ["--reference", "--train", "--test_scaffolds"])
def test_the_bundled_moses_sets_are_refused_for_repeat_units(tmp_path, capsys, option):
    samples = tmp_path / "units.smi"
    samples.write_text("*CC*\n*OCC*\n")
    with pytest.raises(SystemExit) as exit_info:
        run("--samples", samples, "--output", tmp_path / "out", "--kind", "polymer", option, "moses")
    assert exit_info.value.code == 1
    assert f"{option} moses: MOSES holds molecules" in capsys.readouterr().err


def test_a_file_whose_lines_do_not_parse_says_how_it_was_read(tmp_path, capsys):
    none = ["--reference", "none", "--train", "none"]
    table, named = tmp_path / "table.smi", tmp_path / "named.smi"
    table.write_text("CCO,ethanol\nc1ccccc1,benzene\n")  # a CSV named .smi
    named.write_text("m1\tCCO\nm2\tc1ccccc1\n")  # the name first
    run("--samples", table, "--output", tmp_path / "a", *none)
    printed = " ".join(capsys.readouterr().out.split())  # as rich wraps it
    assert "the lines hold commas: a table is read by its columns when named .csv" in printed
    run("--samples", named, "--output", tmp_path / "b", *none)
    assert "a line file is read by the first field of each line" in " ".join(capsys.readouterr().out.split())
    scores = tmp_path / "scores.csv"
    scores.write_text("name,SMILES,score\na,CCO,1\nb,CC,2\n")
    run("--samples", scores, "--output", tmp_path / "c", "--smiles_column", "score", *none)
    assert "its column 'score' holds no SMILES?" in " ".join(capsys.readouterr().out.split())


def test_a_csvs_molecule_column_is_found_in_any_case_and_a_named_one_is_hinted(tmp_path, capsys):
    samples = tmp_path / "samples.csv"
    samples.write_text("id,smiles,score\n1,CCO,2\n2,c1ccccc1,3\n")
    run("--samples", samples, "--output", tmp_path / "out", "--reference", "none", "--train", "none")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["valid"] == 1
    with pytest.raises(
        ValueError, match=r"no column 'SMILES' \(columns: \['id', 'smiles', 'score'\]\); 'smiles' differs"
    ):
        read_smiles(samples, "SMILES")  # a column an option names is taken as written


def test_samples_piped_in_are_read_from_the_standard_input(tmp_path):
    options = ["--output", str(tmp_path / "out"), "--reference", "none", "--train", "none"]
    command = [sys.executable, "-m", "polydiff", "evaluate", "--samples", "-", *options]
    env = os.environ | {"POLYDIFF_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        command, input="CCO\nc1ccccc1\nC1CC\n", capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "stdin: 3 samples, 2 valid" in result.stdout
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["valid"] == pytest.approx(2 / 3)


def test_a_polymer_table_of_monomers_and_units_is_read_by_its_units(tmp_path):
    samples = tmp_path / "samples.csv"
    samples.write_text("SMILES,PSMILES\nC=C,*CC*\nC=CC,*CC(*)C\n")
    with warnings.catch_warnings():  # the training table is read by its units too: no "other kind"
        warnings.simplefilter("error", UserWarning)
        run("--samples", samples, "--output", tmp_path / "out", "--kind", "polymer", "--train", samples)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["polymer_valid"] == 1 and metrics["Novelty"] == 0  # every unit is in it


def test_a_reference_of_the_other_kind_is_warned_of(tmp_path, moses_sample):
    units, molecules = tmp_path / "units.smi", tmp_path / "molecules.smi"
    units.write_text("*CC*\n*CC(*)c1ccccc1\n*OCC*\n\nCCO\n")
    molecules.write_text("\n".join(moses_sample[:20]) + "\n")
    with pytest.warns(UserWarning, match=r"--reference .*units.smi: 3 of its first 4 lines are polymer repeat units"):
        run("--samples", molecules, "--output", tmp_path / "a", "--reference", units, "--train", "none")
    with pytest.warns(UserWarning, match=r"--train .*molecules.smi: 0 of its first 20 lines are polymer repeat units"):
        run("--samples", units, "--output", tmp_path / "b", "--kind", "polymer", "--train", molecules)
    with warnings.catch_warnings():  # each kind with its own kind: nothing said
        warnings.simplefilter("error", UserWarning)
        run("--samples", molecules, "--output", tmp_path / "c", "--reference", molecules, "--train", "none")


def test_a_run_with_worker_processes_ends_quietly(tmp_path, moses_sample):
    # The pool ends its workers by SIGTERM, which they must not take for the command's own.
    samples = tmp_path / "samples.smi"
    samples.write_text("\n".join(moses_sample[:300]) + "\n")  # enough for the pool (utils.parallel.INLINE_BELOW)
    options = ["--output", str(tmp_path / "out"), "--reference", "none", "--train", "none", "--n_jobs", "2"]
    command = [sys.executable, "-m", "polydiff", "evaluate", "--samples", str(samples), *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "SIGTERM" not in result.stderr, result.stderr[-2000:]


def test_the_command_scores_samples_without_importing_lightning(tmp_path):
    # Lightning's import is seconds of every start-up; evaluate loads no model and has no use for it.
    samples = tmp_path / "samples.smi"
    samples.write_text("CCO\nc1ccccc1\n")
    options = ["--output", str(tmp_path / "out"), "--reference", "none", "--train", "none"]
    command = [sys.executable, "-X", "importtime", "-m", "polydiff", "evaluate", "--samples", str(samples), *options]
    environment = {**os.environ, "POLYDIFF_ALLOCATOR": "system"}  # this process, not one run again under jemalloc
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines() if line.startswith("import")}
    assert "rdkit" in imported and "polydiff.chem.metrics" in imported
    assert not [name for name in imported if name.partition(".")[0] in ("lightning", "pytorch_lightning")]


def test_csv_samples_keep_empty_rows(tmp_path, capsys):
    samples = tmp_path / "samples.csv"
    samples.write_text("SMILES,score\nCCO,1\n,2\nc1ccccc1,3\n")
    run("--samples", samples, "--output", tmp_path / "out", "--reference", "none", "--train", "none")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["valid"] == pytest.approx(2 / 3)
    assert f"{samples}: 1 empty SMILES cell counted as an invalid sample" in capsys.readouterr().err


def test_polymer_csv_samples_are_read_by_their_psmiles_column(tmp_path):
    samples = tmp_path / "samples.csv"
    samples.write_text("PSMILES,score\n*CC*,1\nCC*,2\n*CC(*)C,3\n")  # as the polymer corpus names it
    run("--samples", samples, "--output", tmp_path / "out", "--kind", "polymer")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["polymer_valid"] == pytest.approx(2 / 3)


def test_the_report_says_what_its_metrics_are_of(files, tmp_path):
    run("--samples", files["samples"], "--output", tmp_path / "out", "--reference", files["test"], "--train", "moses")
    inputs = json.loads((tmp_path / "out" / "inputs.json").read_text())
    assert inputs["samples"]["path"] == str(files["samples"].resolve()) and len(inputs["samples"]["sha256"]) == 64
    assert (inputs["num_samples"], inputs["num_valid"], inputs["kind"]) == (53, 51, "molecule")  # one empty, one bad
    assert inputs["reference"]["path"] == str(files["test"].resolve())
    assert (inputs["train"], inputs["test_scaffolds"]) == ("moses train", None)


def test_reference_lines_rdkit_cannot_read_are_counted(tmp_path, capsys, moses_sample):
    samples, reference = tmp_path / "samples.smi", tmp_path / "reference.smi"
    samples.write_text("\n".join(moses_sample[:10]) + "\n")
    reference.write_text("\n".join([*moses_sample[10:14], "C1CC", "xyz"]) + "\n")
    run("--samples", samples, "--output", tmp_path / "out", "--reference", reference, "--train", reference)
    printed = " ".join("".join(capsys.readouterr()).split())
    assert printed.count(f"{reference}: 2 of its 6 lines RDKit cannot read, left out") == 2  # as test and train


def test_comment_lines_are_no_samples_and_said_to_be(tmp_path, capsys):
    samples = tmp_path / "samples.smi"
    samples.write_text("# polydiff sample, seed 0\nCCO\nC1CC\n# a note\nc1ccccc1\n")
    run("--samples", samples, "--output", tmp_path / "out", "--reference", "none", "--train", "none")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["valid"] == pytest.approx(2 / 3)
    assert f"{samples}: 2 comment lines (#) skipped, not samples" in capsys.readouterr().err


def test_empty_lines_are_invalid_samples_and_said_to_be(tmp_path, capsys):
    """A sample the model left empty is an empty line; so is a blank line at a file's end, which
    the note points at rather than guess which of the two it is."""
    samples = tmp_path / "samples.smi"
    samples.write_text("CCO\n\nc1ccccc1\n\n\n")
    run("--samples", samples, "--output", tmp_path / "out", "--reference", "none", "--train", "none")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["valid"] == pytest.approx(2 / 5)
    assert f"{samples}: 3 empty lines (2 at the end of the file) counted as invalid samples" in capsys.readouterr().err


def test_a_line_that_is_not_utf8_is_an_invalid_sample_and_said_to_be(tmp_path, capsys):
    samples = tmp_path / "samples.smi"
    samples.write_bytes(b"CCO\n\xff\xfeC\nc1ccccc1\n")
    run("--samples", samples, "--output", tmp_path / "out", "--reference", "none", "--train", "none")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["valid"] == pytest.approx(2 / 3)
    err = capsys.readouterr().err
    assert f"{samples}: 1 line not UTF-8 counted as an invalid sample" in err and "empty" not in err


@pytest.mark.parametrize("name", ["samples", "S.SMI", "s.smiles.gz"])
def test_a_samples_file_of_any_line_file_name_is_read(tmp_path, name):
    """``polydiff sample --output samples`` writes a file with no suffix; upper-case suffixes count."""
    samples = tmp_path / name
    text = b"CCO\nc1ccccc1\nC1CC\n"
    samples.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    run("--samples", samples, "--output", tmp_path / "out", "--reference", "none", "--train", "none")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["valid"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("cut.smi.gz", gzip.compress(b"".join(b"C1CCCC1O\n" for _ in range(9)))[:-9], "not a whole gzip file"),
        ("plain.smi.gz", b"CCO\n", "not a whole gzip file"),
        ("open_quote.csv", b'SMILES\n"CCO\nCCN\n', "line 3: unexpected end of data (a quote left open?)"),
    ],
    ids=["gzip cut short", "not gzip", "csv quote left open"],
)
def test_a_damaged_samples_file_is_one_line_naming_it(tmp_path, capsys, name, content, message):
    samples = tmp_path / name
    samples.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        run("--samples", samples, "--output", tmp_path / "out", "--reference", "none", "--train", "none")
    assert exit_info.value.code == 1
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert str(samples) in error and message in error


def test_a_reference_line_that_is_not_utf8_is_skipped(tmp_path, moses_sample):
    samples, reference = tmp_path / "samples.smi", tmp_path / "reference.smi"
    samples.write_text("\n".join(moses_sample[:20]) + "\n")
    reference.write_bytes(("\n".join(moses_sample[300:330]) + "\n").encode() + b"\xff\xfeC\n")
    references = ["--reference", reference, "--train", reference]
    run("--samples", samples, "--output", tmp_path / "out", *references, "--device", "cpu")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["valid"] == 1 and 0 < metrics["Novelty"] <= 1 and metrics["FCD/Test"] > 0


def test_a_smiles_writer_title_line_is_no_sample(tmp_path, capsys):
    samples = tmp_path / "samples.smi"
    samples.write_text("SMILES Name\nCCO 0\nc1ccccc1 1\nC1CC 2\n")  # as RDKit's SmilesWriter heads a file
    run("--samples", samples, "--output", tmp_path / "out", "--reference", "none", "--train", "none")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["valid"] == pytest.approx(2 / 3)
    assert "line 1 ('SMILES') read as a title, not a sample" in capsys.readouterr().err


def test_title_lines_of_joined_shards_and_of_other_names_are_no_samples(tmp_path, capsys):
    samples = tmp_path / "samples.smi"
    samples.write_text("canonical_smiles\nCCO\nc1ccccc1\ncanonical_smiles\nCC(=O)O\n")  # two shards joined
    run("--samples", samples, "--output", tmp_path / "out", "--reference", "none", "--train", "none")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["valid"] == 1
    assert "2 lines read as titles (line 1 ('canonical_smiles'), ...), not samples" in capsys.readouterr().err
