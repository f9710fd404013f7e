"""The ``polydiff`` command: LightningCLI's fit/validate/test/predict on DiffusionTask."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from polydiff import __version__
from polydiff.commands import DEBUG_ENV, user_errors
from polydiff.data.datamodule import SmilesDataModule
from polydiff.tasks.checkpoints import check_checkpoint
from polydiff.tasks.diffusion_task import DiffusionTask

DESCRIPTION = (
    "Masked diffusion models for molecules and polymers. Also: `polydiff sample` (generate from a checkpoint) "
    "and `polydiff evaluate` (MOSES metrics of a samples file)."
)


class PolydiffParser(LightningArgumentParser):
    """A parser whose errors stay short: the full usage lists every Trainer option."""

    def print_usage(self, file=None) -> None:
        prog = self.prog.replace(" [options]", "")
        (file or sys.stdout).write(f"usage: {prog} [-h] [-c CONFIG] [--KEY VALUE ...]\n")

    def error(self, message: str, ex: Exception | None = None):
        """A bad key, value or type ends with one line on stderr and exit code 2 (POLYDIFF_DEBUG=1:
        jsonargparse's own report)."""
        if not self.exit_on_error or os.environ.get(DEBUG_ENV):
            return super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {' '.join(message.split())} (options: {prog} --help)\n")
        self.exit(2)


class PolydiffCLI(LightningCLI):
    """LightningCLI with the data module's kind, representation, tokenizer and length limit linked into the task."""

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        parser.add_argument("--version", action="version", version=f"polydiff {__version__}")
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # One place to set each: the task's tokenizer and position table follow the data.
        parser.link_arguments("data.representation", "model.representation")
        parser.link_arguments("data.kind", "model.kind")
        parser.link_arguments("data.tokenizer_name", "model.tokenizer_name")
        parser.link_arguments("data.max_length", "model.model_config.max_position_embeddings")

    def _instantiate_trainer(self, config: dict, callbacks: list):
        # A whole number above 1 is a step count; in a long test session under Lightning 2.5 the
        # union int | float of val_check_interval came back from instantiation as 6.0, which
        # Lightning then refuses.
        interval = config.get("val_check_interval")
        if isinstance(interval, float) and interval > 1 and interval.is_integer():
            config["val_check_interval"] = int(interval)
        return super()._instantiate_trainer(config, callbacks)

    def _parse_ckpt_path(self) -> None:
        # Lightning >= 2.6 reads the model's hyperparameters from --ckpt_path right after parsing:
        # resolve "last" and check the file before it does, so that a bad file is one clear error.
        self._resolve_subcommand_checkpoint()
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        self._resolve_subcommand_checkpoint()  # Lightning 2.5 has no _parse_ckpt_path

    def _resolve_subcommand_checkpoint(self) -> None:
        subcommand = self.config.get("subcommand")
        if subcommand:
            self._resolve_checkpoint(subcommand, self.config[subcommand])

    def _resolve_checkpoint(self, subcommand: str, config) -> None:
        """``--ckpt_path last`` means the newest last.ckpt under the run's default_root_dir (a new run
        gets a new version folder, where Lightning would find none); any other path must be a
        readable polydiff checkpoint."""
        path = config.get("ckpt_path")
        if path == "last" and subcommand == "fit":
            root = Path(config.get("trainer", {}).get("default_root_dir") or ".")
            found = sorted(root.glob("**/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
            if not found:
                rank_zero_warn(f"--ckpt_path last: no last.ckpt under {root} yet; training starts from scratch")
                config["ckpt_path"] = None
                return
            config["ckpt_path"] = path = str(found[-1])
            rank_zero_info(f"resuming from {path}")
        if path not in (None, "last", "best", "hpc", "registry"):
            check_checkpoint(path)


def main(args: list[str] | None = None) -> None:
    """Runs the CLI on ``args`` (default: ``sys.argv[1:]``).

    Errors a user can cause end with one line on stderr and exit code 1; set POLYDIFF_DEBUG=1
    for the traceback. Argument errors are reported by the parser itself (exit code 2).
    ``polydiff sample`` and ``polydiff evaluate`` are plain typed commands (``polydiff.commands``), not LightningCLI.
    """
    command_line = sys.argv[1:] if args is None else args
    if command_line[:1] == ["sample"]:
        from polydiff.commands.sample import main as sample_main  # its own light parser

        sample_main(command_line[1:])
        return
    if command_line[:1] == ["evaluate"]:
        from polydiff.commands.evaluate import main as evaluate_main  # plain typed command, like sample

        evaluate_main(command_line[1:])
        return
    # polydiff's batch sampler resumes mid-epoch itself (it skips the batches a checkpoint had
    # trained on), which Lightning cannot see: its warning that the loader is not resumable is wrong here.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    with user_errors("polydiff"):
        PolydiffCLI(
            DiffusionTask,
            SmilesDataModule,
            args=args,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            parser_class=PolydiffParser,
            parser_kwargs={"prog": "polydiff", "description": DESCRIPTION},
        )
