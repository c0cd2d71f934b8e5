"""The ``calcnode`` command.

One console script with sub-commands, all in one home: :mod:`dicom_node.commands`,
one module per command or pair of related commands. Each registers itself here with a
``register(subparsers)`` function that adds its parser and sets ``func``
(``args -> exit code``). The command layer parses arguments and reads configuration;
the code it drives (``analysis``, ``training``, the node) takes plain values.

Bad input never produces a traceback: the typed input errors
(:class:`analysis.dicom_input.InputError`) and configuration errors are printed
to stderr as one line each and the exit code is non-zero.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from analysis.dicom_input import InputError

from . import __version__
from .config import ConfigError

# Modules that provide sub-commands, in the order they appear in --help.
# Each has register(subparsers); heavy imports (torch, radiomics) stay inside the commands.
SUBCOMMAND_MODULES = (
    "dicom_node.commands.serve",
    "dicom_node.commands.check_config",
    "dicom_node.commands.queue",
    "dicom_node.commands.demo",
    "dicom_node.commands.viewer",
    "dicom_node.commands.inspect",
    "dicom_node.commands.segment",
    "dicom_node.commands.synth",
    "dicom_node.commands.segmentation_training",
    "dicom_node.commands.analyze",
    "dicom_node.commands.batch",
    "dicom_node.commands.train",
    "dicom_node.commands.learning_curve",
    "dicom_node.commands.evaluate_clusters",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calcnode",
        description="DICOM node scoring amorphous breast calcifications (Marathe et al. 2022). "
                    "Research software: not for clinical use.",
    )
    parser.add_argument("--version", action="version", version=f"calcnode {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (InputError, ConfigError) as exc:
        print(f"calcnode {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
