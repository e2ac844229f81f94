"""The Ray cluster a distributed run uses: a local one started for the run, or an existing one.

Ray is an optional dependency (the ``cluster`` extra, installed by ``make setup``): it is imported
only here and only when a run asks for it, and its absence is a one-line error saying how to
install it. A local cluster keeps its session files under the temporary folder (``$TMPDIR/ray``;
the Makefile points ``TMPDIR`` into the checkout), runs without a dashboard and, unless the
caller configured Ray's token authentication, with a token held in this process's environment
instead of Ray's default ``~/.ray/auth_token`` (also when a parent process left Ray's
``RAY_AUTH_MODE=token`` behind); the variables are restored when the cluster stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
from types import ModuleType
from typing import Iterator, Optional

log = logging.getLogger(__name__)

#: Pinned like the other dependencies (pyproject's ``cluster`` extra).
RAY_REQUIREMENT = "ray==2.60.0"
#: ``--ray`` without an address: start a local cluster for the run.
LOCAL = "local"
_AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


class RayUnavailable(RuntimeError):
    """Ray is not installed in the engine's Python."""


def import_ray() -> ModuleType:
    """The ``ray`` module, or :class:`RayUnavailable` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable(
            f"mapping on a Ray cluster needs Ray, which is not installed in this Python "
            f"({exc}); install it with: pip install '{RAY_REQUIREMENT}' (or `make setup`, which "
            f"installs the engine's 'cluster' extra)"
        ) from None
    return ray


def describe(address: Optional[str]) -> str:
    """A cluster address as the log names it."""
    if not address or address == LOCAL:
        return "a local Ray cluster"
    if address == "auto":
        return "the running Ray cluster (auto)"
    return f"the Ray cluster at {address}"


@contextlib.contextmanager
def connected(
    address: Optional[str] = None, num_cpus: Optional[int] = None
) -> Iterator[ModuleType]:
    """Ray, connected for the ``with`` block: to ``address`` (``auto`` or ``host:port``), or
    to a local cluster started here (``None``/``local``; ``num_cpus``:
    its CPUs, default all). A connection that already exists (a test's cluster, a notebook's)
    is used as it is and left open; one made here is closed at the end."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reporting home from a run
    saved = {v: os.environ.get(v) for v in _AUTH_VARIABLES}  # ray.init sets RAY_AUTH_MODE
    try:
        if not address or address == LOCAL:
            token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            if not token and os.environ.get("RAY_AUTH_MODE", "").lower() != "disabled":
                os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # not ~/.ray/auth_token
            temp = os.path.join(tempfile.gettempdir(), "ray")
            log.info("starting a local Ray cluster (session files in %s)", temp)
            ray.init(
                num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, _temp_dir=temp
            )
        else:
            log.info("connecting to %s", describe(address))
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError) as exc:
                raise RuntimeError(f"cannot connect to {describe(address)}: {exc}") from None
        yield ray
    finally:
        ray.shutdown()
        for name, value in saved.items():  # child processes must not inherit this run's
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
