"""End-to-end tests of design through the CLI: a conditioned fit, guided and fragment-constrained sampling."""

import re
from pathlib import Path

import pytest
import torch
from rdkit import Chem

import polydiff
from polydiff.chem.fragments import keeps_fragments
from polydiff.cli import main

CONDITIONS = str(Path(__file__).parents[1] / "recipes" / "conditions.yaml")


@pytest.fixture(scope="module")
def conditioned(tmp_path_factory, fit_tiny) -> Path:
    """A tiny model fitted for a few steps with the conditions recipe (QED, logP, MW, TPSA, SA)."""
    root = tmp_path_factory.mktemp("fit_conditioned")
    return fit_tiny(root, "-c", CONDITIONS, "--trainer.default_root_dir", str(root))  # not the recipe's runs/


def sample(capsys, checkpoint: Path, output: Path, *args: str) -> str:
    capsys.readouterr()
    main(["sample", "--ckpt_path", str(checkpoint), "--output", str(output), "--num_samples=16", "--seed=0", *args])
    return capsys.readouterr().err


def test_a_conditioned_checkpoint_keeps_its_conditions_and_their_statistics(conditioned):
    task = polydiff.load(conditioned, "cpu")
    assert task.conditions == ["qed", "logp", "mw", "tpsa", "sa"]
    mean, std, low, high = task.condition_statistics
    assert (std > 0).all() and (low < mean).all() and (mean < high).all()
    assert 250 <= low[2] < high[2] <= 500  # MOSES molecules weigh 250 to 350 g/mol
    # Names as chemists write them are the ones they match ignoring case.
    torch.testing.assert_close(task.condition_vector({"logP": 2.5, "QED": 0.7}),
                               task.condition_vector({"logp": 2.5, "qed": 0.7}), equal_nan=True)  # fmt: skip


def test_guided_sampling_counts_two_evaluations_per_call(conditioned, tmp_path, capsys):
    plain = sample(capsys, conditioned, tmp_path / "plain.smi")
    guided = sample(
        capsys, conditioned, tmp_path / "guided.smi", "--condition", "logp=2.5,qed=0.8", "--guidance_scale", "2"
    )
    calls = [float(re.search(r"NFE per sequence: mean ([0-9.]+)", out)[1]) for out in (plain, guided)]
    assert calls[0] > 0 and calls[1] > 0
    lines = (tmp_path / "guided.smi").read_text().splitlines()
    assert len(lines) == 16 and lines != (tmp_path / "plain.smi").read_text().splitlines()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--condition", "solubility=3"], "unknown property 'solubility'"),
        (["--condition", "mw=450"], "mw=450 lies outside what this checkpoint was trained on"),
        (["--condition", "logp"], "name=value pairs"),
        (["--guidance_scale", "2"], "needs a condition"),
        (["--guidance_scale", "0"], "needs a condition"),  # given by name, even at no guidance
        (["--steering", "0.5"], "needs a condition"),
        (["--condition", "logp=2.5", "--steering", "0.5", "--length", "20"], "only speculative decoding"),
        (["--condition", "logp=2.5", "--steering", "0", "--length", "20"], "only speculative decoding"),
        (["--condition", "logp=2.5", "--steering", "-1"], "steering must be above 0 (0 turns it off), got -1"),
        (["--fragments", "c1ccccc1"], "one fragment with [*] attachment points"),
    ],
)
def test_a_bad_design_request_is_one_clear_error(conditioned, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--ckpt_path", str(conditioned), "--output", str(tmp_path / "out.smi"), *args])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("polydiff sample: error:") and message in err[0]


def test_steered_samples_are_those_of_the_conditional_model_refused_and_written_again(conditioned, tmp_path, capsys):
    """The tiny fit has a trained property head: a narrow target refuses rows, which back out of
    their ends and write on; their judgements (a pass each, at w = 0) are counted."""
    assert polydiff.load(conditioned, "cpu").property_head is not None
    outputs = {}
    for width in ("0", "0.05"):
        out = sample(capsys, conditioned, tmp_path / f"{width}.smi", "--condition", "logp=2.5", "--steering", width)
        outputs[width] = (tmp_path / f"{width}.smi").read_text().splitlines()
        assert len(outputs[width]) == 16 and "NFE per sequence" in out
    assert outputs["0"] != outputs["0.05"]


def test_a_checkpoint_fitted_without_condition_dropout_samples_the_conditional_model_alone(
    conditioned, tmp_path, capsys
):
    """Before dropout 0 was refused, a fit could train no unconditional model: such a checkpoint
    (its data module's hparams say so) samples p(x | c), and refuses guidance and steering."""
    checkpoint = torch.load(conditioned, weights_only=False)
    assert checkpoint["datamodule_hyper_parameters"]["condition_dropout"] == 0.2  # the recipe's
    checkpoint["datamodule_hyper_parameters"]["condition_dropout"] = 0.0
    undropped = tmp_path / "undropped.ckpt"
    torch.save(checkpoint, undropped)
    out = sample(capsys, undropped, tmp_path / "conditional.smi", "--condition", "logp=2.5")
    assert "NFE per sequence" in out and len((tmp_path / "conditional.smi").read_text().splitlines()) == 16
    for args, message in [
        (["--guidance_scale", "2"], "guidance_scale: this checkpoint was fitted with data.condition_dropout 0"),
        (["--steering", "0.5"], "steering: this checkpoint was fitted with data.condition_dropout 0"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            sample(capsys, undropped, tmp_path / "refused.smi", "--condition", "logp=2.5", *args)
        assert exit_info.value.code == 1 and message in capsys.readouterr().err


def test_fragment_constrained_samples_keep_their_fragments(conditioned, tmp_path, capsys):
    torch.manual_seed(0)
    output = tmp_path / "linked.smi"
    summary = sample(capsys, conditioned, output, "--fragments", "[*]C(=O)O.[*]N1CCCC1")
    lines = output.read_text().splitlines()
    for line in lines:
        if Chem.MolFromSmiles(line) is not None and line:
            assert keeps_fragments(line, ["[*]C(=O)O", "[*]N1CCCC1"]), line
    kept = sum(keeps_fragments(line, ["[*]C(=O)O", "[*]N1CCCC1"]) for line in lines)
    assert f"kept the fragments, stereocentres included: {kept} of {len(lines)}" in summary
