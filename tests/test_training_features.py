"""EMA of the weights, gradient accumulation to a global batch, bf16 and torch.compile, through the real CLI."""

import math
import warnings
from pathlib import Path

import lightning
import pytest
import torch
from lightning.pytorch import Trainer
from packaging.version import Version

import polydiff
from polydiff.data.datamodule import MoleculeDataModule
from polydiff.tasks.ema import EMA as EMA_CALLBACK

ROOT = Path(__file__).parents[1]
EMA = str(ROOT / "recipes" / "trainer" / "ema.yaml")


NEW_LIGHTNING = Version(lightning.__version__) >= Version("2.6")


@pytest.mark.skipif(not NEW_LIGHTNING, reason="EMAWeightAveraging is new in Lightning 2.6")
def test_ema_checkpoint_holds_the_average_and_the_raw_weights(tmp_path, fit_tiny):
    path = fit_tiny(tmp_path, "-c", EMA, "--model.sample_every_n_validations", "1", "--model.val_num_samples", "8")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert set(average) == set(raw)
    name = "model.output_projection.3.weight"
    assert not torch.equal(average[name], raw[name])  # 12 steps at decay 0.999: the average lags far behind
    for buffer in ("length_histogram", "token_histogram", "tokens_seen"):  # state, copied rather than averaged
        assert torch.equal(average[buffer], raw[buffer])
    assert average["length_histogram"].sum() == 1000 and average["tokens_seen"] > 0
    task = polydiff.load(path, device="cpu")
    assert torch.equal(task.state_dict()[name], average[name])  # sampling uses the average
    assert len(task.sample(4, seed=0)) == 4

    # Resumed without the callback, training goes on from the trained weights, not the average.
    for callbacks, resumes_from in (([], raw), ([EMA_CALLBACK()], average)):
        resumed = dict(checkpoint)
        task.trainer = Trainer(callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False)
        task.trainer.state.fn = "fit"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            task.on_load_checkpoint(resumed)
        assert resumed["state_dict"] is resumes_from
        assert any("training goes on from the trained weights" in str(w.message) for w in caught) == (not callbacks)


def test_global_batch_size_sets_gradient_accumulation(tmp_path, smiles_files, fit_tiny):
    files = {"train_file": str(smiles_files["train"]), "val_file": str(smiles_files["val"])}
    data = MoleculeDataModule(**files, batch_size=32, global_batch_size=128, token_cache=False)
    assert data._accumulation(world_size=1) == 4 and data._accumulation(world_size=2) == 2
    with pytest.raises(ValueError, match="not a multiple"):
        data._accumulation(world_size=3)
    path = fit_tiny(tmp_path, "--data.global_batch_size", "64", "--trainer.max_steps", "3")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 3
    assert checkpoint["state_dict"]["tokens_seen"] > 3 * 32 * 10  # six batches of 32 went into three steps


def test_bf16_mixed_precision_fit_gives_a_finite_bound(tmp_path, fit_tiny):
    path = fit_tiny(tmp_path, "-c", str(ROOT / "recipes" / "precision" / "bf16-mixed.yaml"))
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    (score,) = [v["best_model_score"] for v in checkpoint["callbacks"].values() if v.get("monitor") == "val/nll"]
    assert math.isfinite(float(score))


@pytest.mark.slow
def test_compiled_encoder_trains_and_saves_plain_parameter_names(tmp_path, fit_tiny):
    path = fit_tiny(tmp_path, "--model.compile", "true", "--trainer.max_steps", "4")
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    assert not any("_orig_mod" in name for name in state)
    assert len(polydiff.load(path, device="cpu").sample(2, seed=0)) == 2


def test_block_diffusion_trains_and_samples_through_the_cli(tmp_path, fit_tiny):
    path = fit_tiny(
        tmp_path, "--model.diffusion_config.block_size", "2", "--model.sample_every_n_validations", "1",
        "--model.val_num_samples", "8",
    )  # fmt: skip
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    (score,) = [v["best_model_score"] for v in checkpoint["callbacks"].values() if v.get("monitor") == "val/nll"]
    assert math.isfinite(float(score))
    task = polydiff.load(path, device="cpu")
    assert task.diffusion_process.config.block_size == 2  # saved with the hyperparameters
    samples = task.sample(6, seed=0)
    assert len(samples) == 6 and all(samples)


def test_a_smoke_test_saves_no_checkpoint_for_a_later_resume_to_find(tmp_path, fit_tiny):
    fit_tiny(tmp_path, "--trainer.fast_dev_run", "true")
    assert not list(tmp_path.glob("**/*.ckpt"))  # Lightning's ModelCheckpoint wrote last.ckpt at its end


def test_no_logger_leaves_the_recipes_learning_rate_monitor_out_rather_than_failing_after_setup(
    tmp_path, fit_tiny, caplog
):
    fit_tiny(tmp_path, "--trainer.logger", "false", "--trainer.max_steps", "6")  # a validation at step 6
    assert "the LearningRateMonitor has nothing to log to and is left out" in caplog.text
    assert torch.load(next(tmp_path.glob("**/last.ckpt")), weights_only=True)["global_step"] == 6
