"""The ``polydiff`` command: LightningCLI's fit/validate/test/predict on DiffusionTask."""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from polydiff import __version__
from polydiff.commands import user_errors
from polydiff.data.datamodule import SmilesDataModule
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
