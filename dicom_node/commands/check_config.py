"""``calcnode check-config``: validate a configuration and print the effective values."""
from __future__ import annotations

import json

from ..config import default_config_text, describe
from .serve import add_config_arguments, config_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "check-config", help="validate a configuration file and print the effective settings",
        description="Validate the configuration (file + flags) and print the effective settings "
                    "as JSON. Exit 0 when valid, 1 with the reason on stderr otherwise.")
    add_config_arguments(parser)
    parser.add_argument("--print-defaults", action="store_true",
                        help="print the documented default configuration file and exit")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.print_defaults:
        print(default_config_text(), end="")
        return 0
    config = config_from_args(args)
    print(json.dumps({"valid": True, "source": config.source, "config": describe(config)}, indent=2))
    return 0
