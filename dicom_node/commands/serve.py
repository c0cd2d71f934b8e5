"""``calcnode serve``: run the node in the foreground until SIGTERM/SIGINT.

The node (:class:`dicom_node.service.Node`): the Storage SCP, study assembly, analysis
worker processes, the outbound sender and the monitoring HTTP port.
"""
from __future__ import annotations

import logging
import signal
import threading

from ..config import describe, load_config
from ..logs import event, setup_logging
from ..state import StateError

log = logging.getLogger("calcnode.serve")


def add_config_arguments(parser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (default: embedded defaults)")
    parser.add_argument("--host", help="address to listen on (node.host)")
    parser.add_argument("--port", type=int, help="TCP port (node.port)")
    parser.add_argument("--ae-title", help="the node's AE title (node.ae_title)")
    parser.add_argument("--state-dir", metavar="DIR", help="spool and state folder (node.state_dir)")
    parser.add_argument("--log-format", choices=("json", "text"), help="logging.format")


def config_from_args(args):
    return load_config(args.config, overrides={
        "node": {"host": args.host, "port": args.port, "ae_title": args.ae_title,
                 "state_dir": args.state_dir},
        "logging": {"format": args.log_format},
    })


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="run the DICOM node (Storage SCP) in the foreground",
                                   description="Run the DICOM node in the foreground. Flags override the config file.")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    config = config_from_args(args)
    setup_logging(config.logging.format, config.logging.level)
    event(log, logging.INFO, "calcnode starting (research software, not for clinical use)",
          config_source=config.source, config=describe(config))
    from ..service import Node

    try:
        node = Node(config)
    except (StateError, OSError) as exc:
        event(log, logging.ERROR, "cannot open the state directory", state_dir=str(config.node.state_dir),
              reason=str(exc))
        return 1
    stop = threading.Event()

    def _stop(signum, _frame):
        event(log, logging.INFO, "stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        node.start()
    except OSError as exc:
        event(log, logging.ERROR, "cannot listen", host=config.node.host, port=config.node.port,
              reason=str(exc))
        node.stop()
        return 1
    stop.wait()
    node.stop()
    return 0
