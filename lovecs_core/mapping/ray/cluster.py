"""The Ray cluster a distributed run uses: a local one started for the run, or an existing one.

Ray is an optional dependency (the ``cluster`` extra, installed by ``make setup``): it is imported
only here and only when a run asks for it, and its absence is a one-line error saying how to
install it. A local cluster keeps its session files in a folder of its own under the temporary
folder (``$TMPDIR/ray-XXXXXXXX``, removed when it stops; the Makefile points ``TMPDIR`` into the
checkout), is watched by :mod:`.reaper` (which stops its processes if this one is killed), runs
without a dashboard and, unless the caller configured Ray's token authentication, with a token
held in this process's environment instead of Ray's default ``~/.ray/auth_token`` (also when a
parent process left Ray's ``RAY_AUTH_MODE=token`` behind); the variables are restored when the
cluster stops. An address that does not answer is an error within seconds, and SIGTERM stays the
command line's cancel (Ray would otherwise abort the process).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
from types import ModuleType
from typing import Iterator, Optional
from urllib.parse import urlsplit

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


def check_ray_options(workers: Optional[int], cpus_per_worker: Optional[int]) -> None:
    """``--ray-workers`` (when given) and ``--ray-cpus-per-worker`` are whole numbers of at
    least 1; else a ``ValueError`` naming the option."""
    for flag, value in (("--ray-workers", workers), ("--ray-cpus-per-worker", cpus_per_worker)):
        if value is None and flag == "--ray-workers":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{flag} must be a whole number of at least 1, got {value!r}")


#: Seconds an address may take to answer, and a connection to the cluster to be made.
CONNECT_TIMEOUT_S = 20.0


def _host_port(address: str) -> tuple[str, int]:
    """``host:port``, ``ray://host:port`` or ``host`` (Ray's default ports)."""
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    default = 10001 if parts.scheme == "ray" else 6379
    try:
        port = parts.port or default
    except ValueError:
        raise RuntimeError(f"cannot read the Ray address {address!r}: give host:port") from None
    if not parts.hostname:
        raise RuntimeError(f"cannot read the Ray address {address!r}: give host:port")
    return parts.hostname, port


#: What an HTTP/2 client sends first (the connection preface and an empty SETTINGS frame); a
#: cluster's gRPC server answers with a SETTINGS frame of its own (RFC 9113, 3.4).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS_FRAME = 4


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """The cluster's address answers as a gRPC server (Ray's GCS or Ray Client) within
    ``timeout`` seconds; else a one-line ``RuntimeError`` (Ray itself retries an address
    that does not answer for minutes, in C++ a cancel cannot interrupt)."""
    host, port = _host_port(address)
    where = describe(address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_HTTP2_PREFACE)
            head = conn.recv(9)
    except socket.timeout:
        head = b""
    except OSError as exc:
        raise RuntimeError(
            f"cannot connect to {where} ({(exc.strerror or str(exc)).lower()}): is the cluster "
            "running there (`ray start --head` on that machine) and its port open?"
        ) from None
    if len(head) < 4 or head[3] != _SETTINGS_FRAME:
        raise RuntimeError(
            f"cannot connect to {where}: no Ray answer within {timeout:.0f} s (is it the port "
            "of a Ray cluster's head, as `ray start --head` printed it?)"
        )


@contextlib.contextmanager
def _our_signal_handlers() -> Iterator[None]:
    """Ray's core worker installs C++ handlers for SIGTERM and SIGINT in ``ray.init``; a
    SIGTERM (the plugin's cancel) then aborts the process with a backtrace (exit 134). The
    Python handlers in place before ``ray.init`` (the command line's cancel) are put back
    after it, so a cancel stops the run and the cluster cleanly (exit 130)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def _start_local(ray: ModuleType, num_cpus: Optional[int]) -> str:
    """Start a local cluster whose session files live in a folder of their own under the
    temporary folder, watched by :mod:`.reaper` (its processes go with this one even after a
    ``kill -9``). Returns the folder."""
    from .reaper import start_reaper

    token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not token and os.environ.get("RAY_AUTH_MODE", "").lower() != "disabled":
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # not ~/.ray/auth_token
    temp = tempfile.mkdtemp(prefix="ray-")
    start_reaper(temp)
    log.info("starting a local Ray cluster (session files in %s)", temp)
    with _our_signal_handlers():
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    return temp


def _connect(ray: ModuleType, address: str) -> None:
    """Connect to a running cluster (an address that does not answer: a one-line error within
    :data:`CONNECT_TIMEOUT_S`)."""
    log.info("connecting to %s", describe(address))
    if address != "auto":
        check_reachable(address)
    try:
        with _our_signal_handlers():
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError) as exc:
        raise RuntimeError(f"cannot connect to {describe(address)}: {exc}") from None


@contextlib.contextmanager
def connected(
    address: Optional[str] = None, num_cpus: Optional[int] = None
) -> Iterator[ModuleType]:
    """Ray, connected for the ``with`` block: to ``address`` (``auto`` or ``host:port``; an
    address that does not answer is an error within :data:`CONNECT_TIMEOUT_S`), or to a local
    cluster started here (``None``/``local``; ``num_cpus``: its CPUs, default all), stopped at
    the end with its session folder. A connection that already exists (a test's cluster, a
    notebook's) is used as it is and left open; one made here is closed at the end. A SIGTERM
    during the block is the command line's cancel, not Ray's abort."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reporting home from a run
    saved = {v: os.environ.get(v) for v in _AUTH_VARIABLES}  # ray.init sets RAY_AUTH_MODE
    temp = None
    try:
        if not address or address == LOCAL:
            temp = _start_local(ray, num_cpus)
        else:
            _connect(ray, address)
        yield ray
    finally:
        with _our_signal_handlers():
            ray.shutdown()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        for name, value in saved.items():  # child processes must not inherit this run's
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
