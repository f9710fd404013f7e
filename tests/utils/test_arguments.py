"""Arguments given in Python are held to their declarations, as the command line holds them."""

import re

import numpy as np
import pytest

import polydiff
from polydiff.utils.arguments import fits, type_in_words


@pytest.mark.parametrize(
    ("built", "given", "error", "message"),
    [
        (
            polydiff.LRScheduleConfig,
            {"decay": "linear"},
            ValueError,
            "lr_schedule.decay must be one of cosine, constant, got 'linear'",
        ),
        (
            polydiff.LRScheduleConfig,
            {"decay_over": "time"},
            ValueError,
            "lr_schedule.decay_over must be one of steps, steps_or",
        ),
        (
            polydiff.DiffusionConfig,
            {"time_sampling": "uniformly"},
            ValueError,
            "diffusion_config.time_sampling must be one of",
        ),
        (
            polydiff.DiffusionConfig,
            {"block_size": "4"},
            TypeError,
            "diffusion_config.block_size must be an integer, got '4'",
        ),
        (
            polydiff.ModelConfig,
            {"hidden_size": "128"},
            TypeError,
            "model_config.hidden_size must be an integer, got '128'",
        ),
        (
            polydiff.DiffusionTask,
            {"kind": "polymers"},
            ValueError,
            "kind must be one of molecule, polymer, got 'polymers'",
        ),
        (
            polydiff.DiffusionTask,
            {"on_nonfinite_loss": "ignore"},
            ValueError,
            "on_nonfinite_loss must be one of stop, skip",
        ),
        (
            polydiff.DiffusionTask,
            {"conditions": "logp"},
            TypeError,
            "conditions must be a list (each item text) or None, got 'logp'",
        ),
        (polydiff.DiffusionTask, {"compile": "yes"}, TypeError, "compile must be True or False, got 'yes'"),
        (
            polydiff.DiffusionTask,
            {"model_config": {"hidden_size": 64}},
            TypeError,
            "model_config must be a ModelConfig",
        ),
        (polydiff.DiffusionTask, {"sampling": {"temperature": 0.5}}, TypeError, "sampling must be a SamplingConfig"),
        (
            polydiff.MoleculeDataModule,
            {"token_cache": "no"},
            TypeError,
            "data.token_cache must be True or False or None",
        ),
        (
            polydiff.MoleculeDataModule,
            {"on_bad_line": "raise"},
            ValueError,
            "data.on_bad_line must be one of skip, error",
        ),
        (polydiff.MoleculeDataModule, {"batch_size": "32"}, TypeError, "data.batch_size must be an integer, got '32'"),
        (polydiff.SamplingConfig, {"strategy": "greedy"}, ValueError, "strategy must be one of speculative, prefix"),
    ],
)
def test_a_value_the_declaration_refuses_is_refused_at_construction(built, given, error, message):
    with pytest.raises(error, match=re.escape(message)):
        built(**given)


def test_numbers_of_numpy_integers_for_floats_and_paths_for_text_are_taken(tmp_path):
    train = tmp_path / "train.smi"
    train.write_text("CCO\n")
    assert polydiff.MoleculeDataModule(train_file=train).hparams.train_file == str(train)  # saved as text
    assert polydiff.MoleculeDataModule(batch_size=np.int64(32), condition_dropout=None).hparams.batch_size == 32
    assert polydiff.LRScheduleConfig(min_lr_ratio=0).min_lr_ratio == 0
    assert fits(np.float32(0.5), float) and fits(np.True_, bool) and not fits(True, int) and not fits(1, bool)


def test_what_the_declaration_cannot_tell_is_left_to_the_class():
    assert fits(object(), polydiff.DiffusionSchedule) is None  # an abstract class: its subclasses' business
    assert fits(np.array([1000, 10000]), list[int])
    assert fits("CCO", list[str]) is False and fits(["CCO", 3], list[str]) is False and fits(["CCO"], list[str])
    assert type_in_words(list[str] | None) == "a list (each item text) or null"
