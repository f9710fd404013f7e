"""End-to-end tests of the ``polydiff`` command through ``polydiff.cli.main``."""

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from polydiff import DiffusionTask
from polydiff.cli import main

ROOT = Path(__file__).parents[1]
RECIPES = ROOT / "recipes"
BASE = str(RECIPES / "base.yaml")
TINY = str(Path(__file__).parent / "configs" / "tiny.yaml")

COMBINATIONS = list(
    itertools.product(
        sorted((RECIPES / "model").glob("*.yaml")),
        sorted((RECIPES / "schedule").glob("*.yaml")),
        sorted((RECIPES / "precision").glob("*.yaml")),
    )
)


def print_config(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def test_every_recipe_file_has_a_comment():
    for path in RECIPES.rglob("*.yaml"):
        assert path.read_text().startswith("#"), f"{path} should start with a comment saying what it is for"


@pytest.mark.parametrize(("model", "schedule", "precision"), COMBINATIONS, ids=lambda p: p.stem)
def test_recipe_combination_parses_and_round_trips(capsys, tmp_path, model, schedule, precision):
    printed = print_config(capsys, "-c", BASE, "-c", str(model), "-c", str(schedule), "-c", str(precision))
    config = yaml.safe_load(printed)
    assert (
        config["model"]["model_config"]["hidden_size"]
        == yaml.safe_load(model.read_text())["model"]["model_config"]["hidden_size"]
    )
    assert (
        config["model"]["schedule"]["class_path"]
        == yaml.safe_load(schedule.read_text())["model"]["schedule"]["class_path"]
    )
    assert config["trainer"]["precision"] == yaml.safe_load(precision.read_text())["trainer"]["precision"]
    (tmp_path / "resolved.yaml").write_text(printed)
    assert print_config(capsys, "-c", str(tmp_path / "resolved.yaml")) == printed


def test_layered_recipes_from_the_issue(capsys):
    printed = print_config(
        capsys,
        "-c",
        BASE,
        "-c",
        f"{RECIPES}/model/bert-small.yaml",
        "-c",
        f"{RECIPES}/schedule/linear.yaml",
        "-c",
        f"{RECIPES}/precision/bf16-mixed.yaml",
    )
    assert "hidden_size: 512" in printed
    assert "class_path: polydiff.diffusion.LinearSchedule" in printed
    assert "precision: bf16-mixed" in printed


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (["data/large.yaml"], "token_cache: true"),
        (["data/large.yaml", "trainer/ddp.yaml"], "strategy: ddp"),
        (["model/bert-base.yaml", "trainer/fsdp.yaml"], "class_path: polydiff.tasks.fsdp.BertFSDPStrategy"),
        (["trainer/ema.yaml"], "class_path: polydiff.tasks.ema.EMA"),
        (["data/polymers.yaml"], "kind: polymer"),
    ],
    ids=["large", "ddp", "fsdp", "ema", "polymers"],
)
def test_scale_and_data_recipes_layer_on_base(capsys, layers, expected):
    printed = print_config(capsys, "-c", BASE, *(arg for layer in layers for arg in ("-c", f"{RECIPES}/{layer}")))
    assert expected in printed
    assert "use_distributed_sampler: false" in printed  # polydiff's samplers shard themselves under DDP


def test_fit_validate_and_load(tmp_path, smiles_files, capsys):
    data = ["--data.train_file", str(smiles_files["train"]), "--data.val_file", str(smiles_files["val"])]
    main(["fit", "-c", BASE, "-c", TINY, *data, "--trainer.default_root_dir", str(tmp_path)])
    checkpoints = sorted(tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt"))
    assert [c.name for c in checkpoints] == ["best.ckpt", "last.ckpt"]
    assert (tmp_path / "lightning_logs/version_0/config.yaml").exists()

    state = torch.load(checkpoints[1], map_location="cpu", weights_only=True)
    assert state["global_step"] == 12
    capsys.readouterr()
    main(
        [
            "validate",
            "-c",
            BASE,
            "-c",
            TINY,
            *data,
            "--trainer.default_root_dir",
            str(tmp_path),
            "--ckpt_path",
            str(checkpoints[0]),
        ]
    )
    assert "val/nll" in capsys.readouterr().out

    task = DiffusionTask.load_from_checkpoint(checkpoints[1], map_location="cpu")
    assert task.model.config.hidden_size == 32
    assert type(task.schedule).__name__ == "CosineSchedule"
    assert task.length_histogram.sum() == 1000  # the training lengths travel with the weights
    seen = task.token_histogram > 0  # and the tokens the training data has: the sampler keeps to them
    assert seen[task.tokenizer.convert_tokens_to_ids(["C", "c", "1", "(", "[SEP]"])].all() and seen.sum() < 60
    torch.testing.assert_close(
        task.state_dict()["model.output_projection.3.weight"], state["state_dict"]["model.output_projection.3.weight"]
    )


def test_unknown_key_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", BASE, "--model.no_such_key", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no_such_key" in err
    assert "Traceback" not in err


def test_missing_data_file_is_one_clear_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", BASE, "--data.train_file", str(tmp_path / "missing.smi")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"polydiff: error: FileNotFoundError: data file not found: {tmp_path / 'missing.smi'}"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["design"], "unknown command 'design': give fit, validate, test, predict, sample or evaluate"),
        ([], "give a command"),
    ],
)
def test_an_unknown_or_missing_command_lists_every_command(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert message in err and "sample or evaluate" in err


def test_a_config_file_before_the_command_is_refused(capsys):
    """LightningCLI would read it and drop every setting in it: a run of the classes' defaults."""
    with pytest.raises(SystemExit) as exit_info:
        main(["-c", BASE, "fit", "--print_config"])
    assert exit_info.value.code == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "config files go after the command: polydiff fit -c FILE" in err


def test_module_entry_point_reports_version(capsys):
    result = subprocess.run([sys.executable, "-m", "polydiff", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("polydiff ")
    with pytest.raises(SystemExit):  # the parser's answer, after the entry point's quick one
        main(["--version"])
    assert capsys.readouterr().out == result.stdout
