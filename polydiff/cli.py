"""The ``polydiff`` command: LightningCLI's fit/validate/test/predict on DiffusionTask."""

from __future__ import annotations

import inspect
import logging
import re
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch
import yaml
from jsonargparse import Namespace
from jsonargparse.typing import import_object
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator, MPSAccelerator
from lightning.pytorch.callbacks import BasePredictionWriter, LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from polydiff import __version__
from polydiff.commands import OneLineErrors, one_line_warnings, user_errors
from polydiff.commands.plain import COMMAND_HELP, DESCRIPTION, run_plain_command
from polydiff.data.datamodule import MoleculeDataModule
from polydiff.sampling.config import SamplingConfig
from polydiff.tasks.checkpoints import NeedsCodeError, check_checkpoint, migrate_hyperparameters
from polydiff.tasks.diffusion_task import RUN_SETTINGS, DiffusionTask, data_mismatches
from polydiff.tasks.progress import StepProgressBar, hide_lightning_tips
from polydiff.tasks.resumed_best import BestAcrossResume
from polydiff.tasks.termination import CheckpointOnTermination, Stop, last_stop
from polydiff.utils.files import make_folder

# The data options that decide what validate and test score: the lines, how they are read, and the
# batches (the bound draws its masking times per batch).
SCORED_DATA = (
    "train_file", "val_file", "test_file", "smiles_column", "kind", "polymers", "representation", "tokenizer_name",
    "max_length", "conditions", "val_size", "seed", "on_bad_line", "batch_size",
)  # fmt: skip
# Those that decide the validation lines alone.
HELD_OUT = ("val_file", "val_size")
# Files are named to be scored (and a changed file is said where it is read).
FILES = ("train_file", "val_file", "test_file")
# The top level's description where LightningCLI prints it (``polydiff --help`` prints ``overview``).
CLI_DESCRIPTION = (
    f"{DESCRIPTION} Also: `polydiff sample` (generate from a checkpoint) and `polydiff evaluate` (MOSES metrics of "
    "a samples file)."
)


# jsonargparse reports an option set that a link sets as its value failing the link.
LINK_ERROR = re.compile(r"argument ([\w.]+) --> ([\w.]+): .*")
# LightningCLI knows only its own subcommands; polydiff's sample and evaluate come before it.
SUBCOMMAND_ERROR = re.compile(r'(?:argument subcommand: invalid choice: (\S+)|expected "subcommand" to be one of).*')
COMMANDS = "fit, validate, test, predict, sample or evaluate"
# An option a subcommand does not know, from the command line or a -c file.
# (jsonargparse 4.40 words it "Validation failed: ... does not accept nested key".)
UNKNOWN_OPTION = re.compile(
    r"(?:Validation failed: )?Subcommand '(\w+)' does not accept (?:option|nested key) '([^']+)'.*"
)
# A sampling option named on the command line (``--model.sampling.steps 8`` or ``...steps=8``).
SAMPLING_OPTION = re.compile(r"--model\.sampling\.(\w+)(?:=.*)?")
MODEL_OPTION = re.compile(r"--(model\.[\w.]+)(?:=.*)?")
# Model options a command has no use for, with why, refused where named on its command line (a
# config file counts by its values, as ``_sampling_options_given`` says, and is left alone).
TRAINING = ("model.optimizer", "model.lr_schedule", "model.on_nonfinite_loss", "model.compile")
VALIDATION_SAMPLES = ("model.sample_every_n_validations", "model.val_num_samples")
UNUSED_OPTIONS = {
    "validate": {TRAINING: "trains nothing"},
    "test": {TRAINING: "trains nothing", VALIDATION_SAMPLES: "scores the bound alone and samples nothing"},
    "predict": {TRAINING: "trains nothing", VALIDATION_SAMPLES: "runs no validation (it samples by model.sampling)"},
}
# LightningCLI's subcommands in polydiff's words.
SUBCOMMAND_HELP = {name: COMMAND_HELP[name] for name in ("fit", "validate", "test", "predict")}


class PolydiffParser(OneLineErrors, LightningArgumentParser):
    """A parser whose errors stay short: the full usage lists every Trainer option. Options are taken
    by their whole names only, as ``polydiff sample`` takes them (``CommandParser``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        linked = LINK_ERROR.fullmatch(" ".join(message.split()))
        if linked:
            source, target = linked.groups()
            message = f"{target} follows {source} (the CLI links them): give --{source} instead"
        unknown = SUBCOMMAND_ERROR.fullmatch(" ".join(message.split()))
        if unknown:
            given = unknown.group(1)
            message = f"unknown command {given}: give {COMMANDS}" if given else f"give a command: {COMMANDS}"
        option = UNKNOWN_OPTION.fullmatch(" ".join(message.split()))
        if option:  # the subcommand's own options are what to look at, not the top level's
            subcommand, key = option.groups()
            message = f"unknown option {key}, given on the command line or in a -c file"
            return super().error(message, ex, help_for=f"polydiff {subcommand}")
        return super().error(message, ex)

    def print_usage(self, file=None) -> None:
        prog = self.prog.replace(" [options]", "")
        (file or sys.stdout).write(f"usage: {prog} [-h] [-c CONFIG] [--KEY VALUE ...]\n")


class PolydiffCLI(LightningCLI):
    """LightningCLI with the data module's kind, representation, tokenizer and length limit linked into the task."""

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        parser.add_argument("--version", action="version", version=f"polydiff {__version__}")
        return parser

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs) -> None:
        for subcommand, text in SUBCOMMAND_HELP.items():
            kwargs.setdefault(subcommand, {}).setdefault("description", text)
        super()._add_subcommands(parser, **kwargs)
        listed = getattr(getattr(parser, "_subcommands_action", None), "_choices_actions", [])
        for action in listed:  # the top level's list of subcommands
            action.help = SUBCOMMAND_HELP.get(action.dest, action.help)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # One place to set each: the task's tokenizer and position table follow the data.
        parser.link_arguments("data.representation", "model.representation")
        parser.link_arguments("data.kind", "model.kind")
        parser.link_arguments("data.tokenizer_name", "model.tokenizer_name")
        parser.link_arguments("data.max_length", "model.model_config.max_position_embeddings")
        parser.link_arguments("data.conditions", "model.conditions")

    def _instantiate_trainer(self, config: dict, callbacks: list):
        _refuse_float16_autocast_on_cpu(config)
        _refuse_gpu_devices_without_a_gpu(config)
        # A whole number above 1 is a step count; in a long test session under Lightning 2.5 the
        # union int | float of val_check_interval came back from instantiation as 6.0, which
        # Lightning then refuses.
        interval = config.get("val_check_interval")
        if isinstance(interval, float) and interval > 1 and interval.is_integer():
            config["val_check_interval"] = int(interval)
        # Lightning's own bar counts the batches of an epoch (a 2.5-hour ETA for a 10-minute run);
        # polydiff's counts steps against max_steps/max_time. Not with enable_progress_bar=False
        # (Lightning refuses any bar then), nor over a bar the user's config names.
        given = list(callbacks)
        for value in (config.get("callbacks"), self.trainer_defaults.get("callbacks")):
            given += value if isinstance(value, list) else [value]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            callbacks = [*callbacks, StepProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def _parse_ckpt_path(self) -> None:
        # Lightning >= 2.6 reads the model's hyperparameters from --ckpt_path right after parsing, as
        # this does; here "last" is resolved and the file checked first (a bad file is one clear
        # error), and the hyperparameters of an older checkpoint are brought up to date.
        checkpoint = self._resolve_subcommand_checkpoint()
        hparams = dict((checkpoint or {}).get("hyper_parameters") or {})
        migrate_hyperparameters(hparams, (checkpoint or {}).get("state_dict"))
        hparams.pop("_instantiator", None)
        for setting in RUN_SETTINGS:  # the run's own, as given (older checkpoints kept some)
            hparams.pop(setting, None)
        if hparams:
            given = self.config[self.config.subcommand].model.clone()
            self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)
            # The model must be the one the weights were trained as: a model option given with them is
            # replaced, and said so (a different learning rate for a resumed fit would be silently lost).
            defaults = self._parser(self.config.subcommand).get_defaults().model.as_dict()
            replaced = _changed(
                given.as_dict(), self.config[self.config.subcommand].model.as_dict(), defaults, self._model_given
            )
            if self.config.subcommand != "fit":  # nothing but a fit optimizes: its options change nothing here
                replaced = [name for name in replaced if not name.startswith(TRAINING)]
            if replaced:
                rank_zero_warn(f"--ckpt_path: the checkpoint's model options replace the given {', '.join(replaced)}")

    def before_instantiate_classes(self) -> None:
        checkpoint = self._resolve_subcommand_checkpoint()  # Lightning 2.5 has no _parse_ckpt_path
        if checkpoint is None:
            return
        # Where the model's options come from the checkpoint (Lightning 2.6 and later), so do the data's.
        if self.config.subcommand in ("validate", "test") and hasattr(LightningCLI, "_parse_ckpt_path"):
            self._score_the_fits_lines(checkpoint.get("datamodule_hyper_parameters") or {})
        # A checkpoint trained on the wide SMILES vocabulary (before ``smiles`` became the common
        # one) needs its data tokenized the same way; a tokenizer the user names is left alone.
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        migrate_hyperparameters(hparams, checkpoint.get("state_dict"))
        config = self.config[self.config.subcommand]
        if hparams.get("tokenizer_name") and config.data.tokenizer_name is None:
            config.data.tokenizer_name = config.model.tokenizer_name = hparams["tokenizer_name"]
        # Data read otherwise than the model was trained on would be scored or trained on silently wrong;
        # its length limit and conditions shape the model (its positions, its property head).
        mismatches = data_mismatches(hparams, config.data)
        trained_length = (hparams.get("model_config") or {}).get("max_position_embeddings")
        if trained_length is not None and config.data.max_length != trained_length:
            mismatches.append(("max_length", trained_length, config.data.max_length))
        if mismatches:
            key, value, given = mismatches[0]
            raise ValueError(
                f"the checkpoint was trained with data.{key} {value}, not {given}: "
                f"give --data.{key} {value} (or the -c files it was trained with)"
            )

    def _score_the_fits_lines(self, fitted: dict) -> None:
        """Data options that decide what is scored, left at the class defaults, take the fit's (the
        checkpoint keeps them): without the fit's -c files, ``validate`` would hold out 10,000 lines
        where the fit held out 2,000, and score 8,000 lines it trained on."""
        subcommand = self.config.subcommand
        defaults = inspect.signature(MoleculeDataModule).parameters
        given = self.config[subcommand].data
        taken, other = {}, {}
        for name in SCORED_DATA:
            if subcommand == "test" and name in HELD_OUT:  # a test reads its own file
                continue
            default, value = _plain(defaults[name].default), _plain(given.get(name))
            if name in fitted and value == default and _plain(fitted[name]) != default:
                taken[name] = fitted[name]
            elif name in fitted and value != default and value != _plain(fitted[name]) and name not in FILES:
                other[name] = (value, fitted[name])  # given (a -c file, say): the user's, but said
        if taken:
            self.config = self.parser.parse_object({subcommand: {"data": taken}}, self.config)
            options = ", ".join(f"data.{name} {value}" for name, value in taken.items())
            said = "taking the fit's" if other else "scoring what the fit scored, with its"
            rank_zero_info(f"--ckpt_path: {said} {options}")
        if other:
            options = ", ".join(f"data.{name} {value} (the fit's: {fits})" for name, (value, fits) in other.items())
            rank_zero_warn(f"--ckpt_path: {subcommand} scores otherwise than the fit did, with the given {options}")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        command_line = sys.argv[1:] if args is None else args
        listed = command_line if isinstance(command_line, list) else []
        # Named on the command line, whatever their values (a checkpoint's options replacing them are said to).
        self._model_given = {option.group(1) for option in map(MODEL_OPTION.fullmatch, listed) if option}
        super().parse_arguments(parser, args)
        self._sampling_given = _sampling_options_given(listed)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # Each sampling option given must matter to the model, even at its default value, as in
        # ``polydiff sample``: ``--model.sampling.steps 128`` for a model that takes no steps is refused.
        if isinstance(self.model, DiffusionTask) and self._sampling_given:
            self.model.sampling = SamplingConfig.asked(self._sampling_given, **asdict(self.model.sampling))
        subcommand = self.config.get("subcommand")  # None where the CLI is built without running
        for options, reason in UNUSED_OPTIONS.get(subcommand, {}).items():
            for name in sorted(self._model_given):
                if any(name == option or name.startswith(f"{option}.") for option in options):
                    raise ValueError(f"--{name}: polydiff {subcommand} {reason}")
        writers = [c for c in self.trainer.callbacks if isinstance(c, BasePredictionWriter)]
        if subcommand in ("fit", "validate", "test") and writers:
            raise ValueError(
                f"trainer.callbacks: {type(writers[0]).__name__} writes what polydiff predict samples; polydiff "
                f"{subcommand} predicts nothing (validation logs its own samples: model.sample_every_n_validations)"
            )
        root = str(self.trainer.default_root_dir)
        if "://" not in root:  # a remote one (s3://...) is fsspec's to make
            # Made before the data is prepared: Lightning would fail on it only later, naming no option.
            make_folder(Path(root), f"--trainer.default_root_dir {root}")

    def before_fit(self) -> None:
        # Before the data is prepared: a polymer corpus or a token cache can take minutes to build.
        if self.trainer.max_steps == 0:  # Lightning would end at once, saving nothing, with exit code 0
            raise ValueError("trainer.max_steps 0 trains nothing: give the steps to train (-1: no limit)")
        _refuse_float16_adam(str(self.trainer.precision), self.model.optimizer)
        self.model.check_validation_sampling()
        callbacks = self.trainer.callbacks
        if not self.trainer.loggers and any(isinstance(c, LearningRateMonitor) for c in callbacks):
            # Lightning would refuse it only once the data is set up and the sanity check run.
            rank_zero_info("--trainer.logger false: the LearningRateMonitor has nothing to log to and is left out")
            callbacks[:] = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        if self.trainer.fast_dev_run:
            # A smoke test saves nothing, as Lightning promises; its ModelCheckpoint still wrote last.ckpt
            # at the end, which a later --ckpt_path last would resume.
            callbacks[:] = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
            return
        callbacks.append(CheckpointOnTermination())
        callbacks.append(BestAcrossResume())
        # A resume into a new version folder: BestAcrossResume restores what this warning says is lost.
        warnings.filterwarnings("ignore", message="The dirpath has changed from")

    def before_validate(self) -> None:
        self._warn_without_checkpoint("validate")
        self.model.check_validation_sampling()

    def before_test(self) -> None:
        if self.model.sampling.changed():
            raise ValueError("model.sampling: polydiff test scores the bound alone and samples nothing")
        self._warn_without_checkpoint("test")

    def before_predict(self) -> None:
        self._warn_without_checkpoint("predict")
        # LightningCLI drops what predict returns: without a writer the samples would be lost.
        if not any(isinstance(callback, BasePredictionWriter) for callback in self.trainer.callbacks):
            raise ValueError(
                "polydiff predict writes its samples through polydiff.SampleWriter: add "
                "--trainer.callbacks+=polydiff.SampleWriter --trainer.callbacks.output_file FILE "
                "(or use polydiff sample)"
            )

    def _warn_without_checkpoint(self, subcommand: str) -> None:
        if self.config[subcommand].get("ckpt_path") is None:
            rank_zero_warn(f"polydiff {subcommand} without --ckpt_path runs the freshly initialised weights")
        # Scoring a checkpoint saves none: that its callbacks' old folder is not this run's, or that
        # they are not in this run at all, changes nothing.
        warnings.filterwarnings("ignore", message="The dirpath has changed from")
        warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`, callbacks used to create")

    def _resolve_subcommand_checkpoint(self) -> dict | None:
        subcommand = self.config.get("subcommand")
        return self._resolve_checkpoint(subcommand, self.config[subcommand]) if subcommand else None

    def _resolve_checkpoint(self, subcommand: str, config) -> dict | None:
        """``--ckpt_path last`` means the newest last.ckpt under the run's default_root_dir (a new run
        gets a new version folder, where Lightning would find none), and ``best`` the newest best.ckpt
        there (a fit goes on from it; Lightning's own ``best`` needs a run in this process); any other
        path must be a readable polydiff checkpoint, which is returned. ``--weights_only false`` loads a
        file that needs code, for a source one trusts."""
        path = config.get("ckpt_path")
        if path in ("last", "best"):
            root = Path(config.get("trainer", {}).get("default_root_dir") or ".")
            found = sorted(root.glob(f"**/checkpoints/{path}*.ckpt"), key=lambda p: p.stat().st_mtime)
            if not found and subcommand == "fit" and path == "last":
                rank_zero_warn(f"--ckpt_path last: no last.ckpt under {root} yet; training starts from scratch")
                config["ckpt_path"] = None
                return None
            if not found:  # scoring freshly initialised weights instead would be silently wrong
                raise FileNotFoundError(f"--ckpt_path {path}: no {path}.ckpt under {root} (--trainer.default_root_dir)")
            config["ckpt_path"] = str(found[-1])
            rank_zero_info(f"{'resuming from' if subcommand == 'fit' else 'loading'} {found[-1]}")
            path = str(found[-1])
        if path in (None, "last", "best", "hpc", "registry"):
            return None
        try:
            return check_checkpoint(path, weights_only=config.get("weights_only") is not False)
        except NeedsCodeError as error:
            # Lightning 2.6 and later load a trusted file that holds code: say how.
            if "weights_only" in config:
                raise error.advising("--weights_only false") from None
            raise


def _plain(value):
    """A config value as plain data: a parsed group (jsonargparse's Namespace) or a dataclass as a dict."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value.as_dict() if isinstance(value, Namespace) else value


def _refuse_float16_autocast_on_cpu(config: dict) -> None:
    """Lightning runs ``16-mixed`` on a CPU as ``bf16-mixed``, after a warning, while the saved
    config keeps saying 16-mixed: a run would not be what its config records."""
    if str(config.get("precision")) not in ("16", "16-mixed"):
        return
    accelerator = config.get("accelerator")
    on_cpu = (
        isinstance(accelerator, CPUAccelerator)
        or accelerator == "cpu"
        or (accelerator in (None, "auto") and not (CUDAAccelerator.is_available() or MPSAccelerator.is_available()))
    )
    if on_cpu:
        raise ValueError(
            "trainer.precision 16-mixed (float16 autocast) needs a GPU; on a CPU use bf16-mixed "
            "(recipes/precision/bf16-mixed.yaml) or 32-true"
        )


def _refuse_float16_adam(precision: str, optimizer) -> None:
    """``16-true`` trains the weights themselves in float16, and an Adam-family optimizer keeps its
    moments in their dtype, where its eps (1e-8) rounds to 0: a gradient whose square underflows
    makes the first step divide by zero, and the loss is NaN from then on, on any device and at any
    learning rate."""
    if precision != "16-true":
        return
    name = type(optimizer([torch.nn.Parameter(torch.zeros(1))])).__name__  # the class the callable builds
    if "adam" in name.lower():
        raise ValueError(
            f"trainer.precision 16-true: {name} cannot train float16 weights (its eps rounds to 0, and the "
            "first step turns them NaN); use 16-mixed on a GPU, or bf16-mixed (recipes/precision/) or 32-true"
        )


def _refuse_gpu_devices_without_a_gpu(config: dict) -> None:
    """``recipes/trainer/ddp.yaml`` asks for every GPU (accelerator gpu, devices -1); where there is
    none, Lightning ends in a backend error or a TypeError traceback that name neither option."""
    accelerator, devices = config.get("accelerator"), config.get("devices")
    available = {"cuda": CUDAAccelerator.is_available(), "mps": MPSAccelerator.is_available()}
    available["gpu"] = available["cuda"] or available["mps"]
    if accelerator in available and not available[accelerator]:
        which = "GPU" if accelerator == "gpu" else f"{accelerator.upper()} device"
        raise ValueError(
            f"trainer.accelerator {accelerator}: this machine has no {which}; to run processes on its CPU, give "
            "--trainer.accelerator cpu --trainer.devices N"
        )
    on_cpu = isinstance(accelerator, CPUAccelerator) or accelerator == "cpu"
    if on_cpu and devices in (-1, "-1"):
        raise ValueError("trainer.devices -1 (every GPU) with accelerator cpu: give the number of processes, e.g. 2")


def _sampling_options_given(command_line: Sequence[str]) -> set[str]:
    """The names of the ``model.sampling`` options given on the command line, as flags or inline
    (``--model.sampling '{steps: 8}'``), whatever their values: the parsed config holds values
    alone, in which an option given at its default looks like one never given. A config file
    counts by its values alone: ``--print_config`` and a run's saved config.yaml write every option
    at its default, and reusing them (``fit -c my_run.yaml``) must not ask for each."""
    names: set[str] = set()
    for i, arg in enumerate(command_line):
        key, equals, value = arg.partition("=")
        if not equals:
            value = command_line[i + 1] if i + 1 < len(command_line) else ""
        option = SAMPLING_OPTION.fullmatch(arg)
        if option:
            names.add(option.group(1))
        elif key == "--model":
            names |= set(_mapping(_inline(value).get("sampling")))
        elif key == "--model.sampling":
            names |= set(_inline(value))
    return names


def _inline(value: str) -> dict:
    """The mapping an inline config value gives (``{steps: 8}``); {} for a file's path."""
    try:
        return {} if Path(value).is_file() else _mapping(yaml.safe_load(value))
    except (OSError, yaml.YAMLError):  # the parser has already said what is wrong with it
        return {}


def _mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _changed(before: dict, after: dict, defaults: dict, named: set[str], prefix: str = "model.") -> list[str]:
    """``key (old -> new)`` for every dotted key whose value differs between two nested dicts, among
    the options a user gave: those ``named`` on the command line, and those ``before`` sets otherwise
    than ``defaults`` (a config file counts by its values, as ``_sampling_options_given`` says why)."""
    changes = []
    for key in sorted(before.keys() | after.keys()):
        old, new, default, dotted = before.get(key), after.get(key), defaults.get(key), f"{prefix}{key}"
        if isinstance(old, dict) and isinstance(new, dict):
            changes += _changed(old, new, default if isinstance(default, dict) else {}, named, f"{dotted}.")
        elif old != new and (old != default or _named(dotted, named)) and not _same_class(key, old, new):
            changes.append(f"{dotted} ({old!r} -> {new!r})")
    return changes


def _named(dotted: str, named: set[str]) -> bool:
    """Whether option ``dotted`` was named on the command line, itself or within one named whole
    (``--model.lr_schedule '{...}'``); a class's arguments are named without jsonargparse's ``init_args``."""
    plain = dotted.replace(".init_args.", ".")
    return any(plain == name or plain.startswith(f"{name}.") for name in named)


def _same_class(key: str, path: object, other: object) -> bool:
    """Whether two class paths name one class (``polydiff.CosineSchedule``, ``polydiff.diffusion.CosineSchedule``)."""
    if key != "class_path":
        return False
    try:
        return import_object(path) is import_object(other)
    except (ImportError, AttributeError, ValueError, TypeError):
        return False


@contextmanager
def _ends_on_stop_signals() -> Iterator[None]:
    """Lightning ends a run stopped by SIGTERM (or by a fit's first Ctrl-C, which stops it the same
    way: ``tasks/termination.py``) with exit code 0, as if it had finished: ``polydiff fit ... &&
    polydiff sample ...`` would go on. It ends with 128 + the signal (143, 130), saying where to resume.
    A Ctrl-C that stops the fit at once (before training begins, or the second), which Lightning ends
    with 1, ends with 130 too, saying that nothing was saved."""
    last_stop.reset()
    try:
        yield
    except SIGTERMException:
        if rank_zero_only.rank == 0:  # each process of a DDP run stops alike
            sys.stderr.write(_stopped_line(last_stop))
        raise SystemExit(128 + last_stop.signal) from None
    except SystemExit as leaving:
        if not (last_stop.at_once and leaving.code == 1):
            raise
        # Lightning's exit after a KeyboardInterrupt (Ctrl-C in data setup, the sanity check, or a second one).
        if rank_zero_only.rank == 0:
            sys.stderr.write(_stopped_at_once_line(last_stop))
        raise SystemExit(128 + signal.SIGINT) from None


def _stopped_at_once_line(stop: Stop) -> str:
    when = f"at once, at step {stop.step}" if stop.began else "before training began"
    earlier = f"; the last saved is {stop.earlier}" if stop.earlier else ""
    return f"polydiff: stopped by Ctrl-C {when}, saving nothing{earlier}\n"


def _stopped_line(stop: Stop) -> str:
    by = "Ctrl-C" if stop.signal == signal.SIGINT else stop.signal.name
    if stop.checkpoint is None:
        return f"polydiff: stopped by {by}\n"
    return f"polydiff: stopped by {by} at step {stop.step}; saved {stop.checkpoint}: resume with --ckpt_path last\n"


def _refuse_config_before_the_command(command_line: Sequence[str]) -> None:
    """``polydiff -c base.yaml fit`` would parse and then drop the file's every setting (LightningCLI
    reads a config before the subcommand into a level that no subcommand reads): refused, naming
    where it goes."""
    for arg in command_line:
        if arg in SUBCOMMAND_HELP:
            return
        if arg in ("-c", "--config") or arg.startswith(("--config=", "-c=")):
            sys.stderr.write(
                "polydiff: error: config files go after the command: polydiff fit -c FILE (options: polydiff --help)\n"
            )
            raise SystemExit(2)


def main(args: list[str] | None = None) -> None:
    """Runs the CLI on ``args`` (default: ``sys.argv[1:]``).

    Errors a user can cause end with one line on stderr and exit code 1; set POLYDIFF_DEBUG=1
    for the traceback. Argument errors are reported by the parser itself (exit code 2).
    ``polydiff sample`` and ``polydiff evaluate`` are plain typed commands (``polydiff.commands``), not LightningCLI.
    """
    command_line = sys.argv[1:] if args is None else args
    if run_plain_command(command_line):
        return
    _refuse_config_before_the_command(command_line)
    # polydiff's batch sampler resumes mid-epoch itself (it skips the batches a checkpoint had
    # trained on), which Lightning cannot see: its warning that the loader is not resumable is wrong here.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    # Lightning's own code (utilities/_pytree.py) still builds torch's LeafSpec, which newer torch deprecates:
    # nothing a user of polydiff can change. Only that message from that module.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"(lightning\.pytorch|pytorch_lightning)\.utilities\._pytree",
    )
    # Validation batches are collated in the main process on purpose (MoleculeDataModule's num_workers).
    warnings.filterwarnings("ignore", message=r"The 'val_dataloader' does not have many workers")
    # Under bf16-mixed (every GPU recipe) the weights stay float32, so the summary's 32-bit size,
    # which this warning calls inaccurate, is the right one.
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")
    # Lightning advertises its cloud logger at every fit: an INFO record, not about the run. A module-level
    # function, so that calling main() again does not stack filters.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(hide_lightning_tips)
    # Lightning's own refusals of a Trainer option (an accelerator this machine lacks, max_steps -5),
    # and an option whose package is not installed (precision transformer-engine).
    # Warnings as one line each, polydiff's and Lightning's, as sample and evaluate show them.
    with (
        _ends_on_stop_signals(),
        user_errors("polydiff", also=(MisconfigurationException, ImportError)),
        one_line_warnings("polydiff"),
    ):
        PolydiffCLI(
            DiffusionTask,
            MoleculeDataModule,
            args=args,
            save_config_kwargs={"overwrite": True},
            # Lightning's default (True) seeds 0 with a warning; the recipes' seed, said once here.
            seed_everything_default=0,
            auto_configure_optimizers=False,
            parser_class=PolydiffParser,
            parser_kwargs={"prog": "polydiff", "description": CLI_DESCRIPTION},
        )
