"""A task and data module built in Python save plain hyperparameters, as LightningCLI's do: their
checkpoints load weights-only (no code run), with the same schedule, optimizer and sizes."""

import collections
import functools

import lightning as L
import pytest
import torch

import polydiff
from polydiff.diffusion import PolynomialSchedule
from polydiff.utils.hparams import INSTANTIATOR, as_cli_config

TINY = polydiff.ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.mark.parametrize(
    ("optimizer", "expected"),
    [
        (functools.partial(torch.optim.AdamW, lr=1e-3, betas=(0.8, 0.9)), {"betas": (0.8, 0.9), "weight_decay": 0.01}),
        # SGD's own weight decay (0), not the one of the default AdamW, which the loader's parser filled in
        (functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9), {"momentum": 0.9, "weight_decay": 0}),
    ],
    ids=["AdamW", "SGD"],
)
def test_a_checkpoint_of_a_fit_run_from_python_loads_weights_only(tmp_path, smiles_files, optimizer, expected):
    task = polydiff.DiffusionTask(model_config=TINY, schedule=PolynomialSchedule(2.0), optimizer=optimizer)
    data = polydiff.MoleculeDataModule(
        train_file=str(smiles_files["train"]), val_file=str(smiles_files["val"]), batch_size=16, token_cache=False
    )
    trainer = L.Trainer(max_steps=1, limit_val_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(task, datamodule=data)
    path = tmp_path / "manual.ckpt"
    trainer.save_checkpoint(path)

    saved = torch.load(path, map_location="cpu", weights_only=True)  # plain data: no object to unpickle
    assert saved["hyper_parameters"]["_instantiator"] == INSTANTIATOR
    assert saved["datamodule_hyper_parameters"]["batch_size"] == 16
    loaded = polydiff.load(path, "cpu")
    assert repr(loaded.schedule) == "PolynomialSchedule(power=2.0)"
    assert loaded.model.config.hidden_size == 32
    built = loaded.optimizer(loaded.parameters())
    assert type(built) is optimizer.func and {name: built.defaults[name] for name in expected} == expected
    torch.testing.assert_close(loaded.state_dict()["model.output_projection.3.weight"],
                               task.state_dict()["model.output_projection.3.weight"])  # fmt: skip


def test_arguments_with_no_plain_form_stay_objects():
    class Local(PolynomialSchedule):  # a class that cannot be imported by name
        pass

    assert as_cli_config({"schedule": Local(2.0)}) is None
    assert as_cli_config({"optimizer": lambda parameters: torch.optim.SGD(parameters, lr=0.1)}) is None
    assert as_cli_config({"optimizer": collections.OrderedDict})["optimizer"]["init_args"] == {}  # no signature
    plain = as_cli_config({"optimizer": torch.optim.SGD})["optimizer"]
    assert plain["class_path"] == "torch.optim.sgd.SGD" and plain["init_args"]["weight_decay"] == 0


def test_the_default_schedule_shows_as_it_was_written():
    # jsonargparse builds the default lazily; its repr once ran to megabytes.
    assert repr(polydiff.DiffusionTask(model_config=TINY).schedule) == "CosineSchedule()"
    assert repr(PolynomialSchedule(3.0)) == "PolynomialSchedule(power=3.0)"
