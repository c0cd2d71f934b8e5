"""``calcnode queue list|retry|purge``: the analysis jobs and the outbound queue.

Works on the state database of a node (``--config`` / ``--state-dir`` as for ``serve``),
whether the node runs or not: a running node picks up a retried object within a second.
"""
from __future__ import annotations

import json
import sys
import time

from ..state import JOB_STATES, SEND_STATES, StateDB
from .serve import add_config_arguments, config_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "queue", help="list, retry or purge analysis jobs and outbound objects",
        description="The node's queues: analysis jobs and result objects waiting to be sent, sent or "
                    "dead-lettered. Works while the node runs.")
    sub = parser.add_subparsers(dest="queue_command", metavar="ACTION")

    listing = sub.add_parser("list", help="list jobs and outbound objects")
    add_config_arguments(listing)
    listing.add_argument("--state", action="append", choices=SEND_STATES + JOB_STATES,
                         help="only rows in this state (repeatable; default: everything not finished "
                              "-- queued/running jobs, pending/dead sends)")
    listing.add_argument("--all", action="store_true", help="every job and every send")
    listing.add_argument("--json", action="store_true", help="one JSON object")
    listing.set_defaults(func=run_list)

    retry = sub.add_parser("retry", help="send dead-lettered objects again")
    add_config_arguments(retry)
    retry.add_argument("ids", nargs="*", type=int, metavar="SEND_ID", help="send ids (default: with --all)")
    retry.add_argument("--all", action="store_true", help="every dead-lettered object")
    retry.add_argument("--destination", help="only objects for this destination")
    retry.set_defaults(func=run_retry)

    purge = sub.add_parser("purge", help="delete dead-lettered (or old sent) outbound rows")
    add_config_arguments(purge)
    purge.add_argument("ids", nargs="*", type=int, metavar="SEND_ID",
                       help="send ids to delete, whatever their state (a pending one is then never sent)")
    purge.add_argument("--dead", action="store_true", help="every dead-lettered row")
    purge.add_argument("--sent-older-than", type=float, metavar="DAYS",
                       help="sent rows older than DAYS (the never-send-twice record of those objects goes)")
    purge.set_defaults(func=run_purge)
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), 2)[1])


def _open(args) -> StateDB:
    config = config_from_args(args)
    path = config.state_db
    if not path.exists():
        raise SystemExit(f"calcnode queue: error: no state database at {path} (wrong --state-dir?)")
    return StateDB(path)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def run_list(args) -> int:
    db = _open(args)
    states = set(args.state or [])
    if args.all:
        job_states, send_states = None, None
    elif states:
        job_states = [s for s in states if s in JOB_STATES] or ["__none__"]
        send_states = [s for s in states if s in SEND_STATES] or ["__none__"]
    else:
        job_states, send_states = ["queued", "running"], ["pending", "dead"]
    jobs = db.jobs(job_states)
    sends = db.sends(send_states)
    if args.json:
        print(json.dumps({
            "jobs": [{"id": j.id, "study_instance_uid": j.study_instance_uid, "state": j.state,
                      "attempts": j.attempts, "reason": j.reason, "images": len(j.images),
                      "roi_objects": len(j.roi_objects), "created_at": j.created_at,
                      "finished_at": j.finished_at, "analysis_s": j.analysis_s, "result_dir": j.result_dir}
                     for j in jobs],
            "sends": [s.__dict__ for s in sends]}, indent=2))
        return 0
    print(f"jobs ({len(jobs)})")
    for j in jobs:
        print(f"  {j.id:>5}  {j.state:<8} attempts={j.attempts}  study={j.study_instance_uid}  "
              f"images={len(j.images)} rois={len(j.roi_objects)}  created={_when(j.created_at)}"
              + (f"  reason: {j.reason}" if j.reason else ""))
    print(f"outbound ({len(sends)})")
    for s in sends:
        extra = (f"sent={_when(s.sent_at)}" if s.state == "sent" else
                 f"next={_when(s.next_attempt_at)}" if s.state == "pending" else "")
        print(f"  {s.id:>5}  {s.state:<7} {s.destination:<12} {s.kind or '?':<6} attempts={s.attempts}  "
              f"job={s.job_id}  {s.sop_instance_uid}  {extra}"
              + (f"  error: {s.last_error}" if s.last_error and s.state != "sent" else ""))
    return 0


def run_retry(args) -> int:
    if not args.ids and not args.all and not args.destination:
        print("calcnode queue retry: error: name send ids, or --all, or --destination", file=sys.stderr)
        return 2
    db = _open(args)
    n = db.retry_sends(args.ids or None, destination=args.destination)
    print(f"{n} dead-lettered object(s) queued to be sent again")
    return 0


def run_purge(args) -> int:
    if not args.ids and not args.dead and args.sent_older_than is None:
        print("calcnode queue purge: error: name send ids, or --dead, or --sent-older-than DAYS", file=sys.stderr)
        return 2
    db = _open(args)
    removed = 0
    if args.ids:
        removed += db.purge_sends(ids=args.ids)
    if args.dead:
        removed += db.purge_sends(states=("dead",))
    if args.sent_older_than is not None:
        removed += db.purge_sends(states=("sent",), older_than=time.time() - args.sent_older_than * 86400)
    print(f"{removed} outbound row(s) deleted")
    return 0
