"""``lovecs session``: the refine session the dock keeps alive; JSON requests on stdin, one a
line, each answered by one ``reply`` line on stdout (:mod:`lovecs_core.refinement.session`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from ..contract import QUIT, REPLY
from ..progress import Reporter, emit_json

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "session",
        help="keep a model and a view's features in memory; answer refine requests (JSON lines)",
    )
    p.set_defaults(handler=run)


def answer(session: Any, line: str) -> tuple[dict[str, Any], bool]:
    """The reply to one request line, and whether the session ends."""
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
    except ValueError as exc:
        return {"id": None, "request": None, "ok": False, "error": f"not a request: {exc}"}, False
    head = {"id": request.get("id"), "request": request.get("request")}
    try:
        reply = session.handle(request)
    except (ValueError, OSError, RuntimeError, TypeError) as exc:  # the session goes on
        log.debug("request failed", exc_info=True)
        return {**head, "ok": False, "error": str(exc)}, False
    return {**head, "ok": True, **reply}, request.get("request") == QUIT


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..refinement.session import RefineSession

    session = RefineSession(reporter)
    for line in sys.stdin:
        if not line.strip():
            continue
        reply, done = answer(session, line)
        emit_json(sys.stdout, REPLY, **reply)
        if done:
            break
    return 0
