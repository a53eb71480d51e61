"""Claim files: "this process works on that", for processes that never talk to each other.

SLURM array tasks, torchrun ranks and plain ``vssl extract`` processes on any node share one
store by claiming work in files on the shared file system (a claim per chunk of videos, and
``OUT.creating`` while a store is created). A claim records its owner (host, pid, process start
time, SLURM job, a per-process token) and is made atomically: the record is written to a
private file and hard-linked to the claim's name (``link`` fails when the name exists, on local
file systems, NFS and Lustre alike), so a claim is never seen empty.

A claim whose owner is dead is taken over, so a SIGKILLed or pre-empted process never blocks
the others: on the owner's host a dead pid (or a pid reused by another process) says so at
once; from another host, a claim whose file was not touched for ``stale_s`` seconds (owners
touch their claims from a heartbeat thread, :class:`Heartbeat`) is dead. Ages are measured
against the file system's clock (a file touched now), never this node's, since node clocks drift.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from vssl.errors import VsslError

log = logging.getLogger("vssl.claims")

STALE_ENV = "VSSL_CLAIM_STALE_S"
#: a claim untouched this long (seconds) by an owner on another host is dead; owners touch theirs every quarter
DEFAULT_STALE_S = 600.0

_TOKEN: tuple[int, str] | None = None  # (pid, token): a forked child gets its own


def stale_after() -> float:
    """Seconds after which a claim of an owner on another host, not touched since, is dead."""
    text = os.environ.get(STALE_ENV, "")
    try:
        return float(text) if text else DEFAULT_STALE_S
    except ValueError:
        return DEFAULT_STALE_S


def _process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat): tells a reused pid apart; '' if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner() -> dict[str, Any]:
    """This process as a claim owner: host, pid, start time, SLURM job (if any) and a token."""
    global _TOKEN
    pid = os.getpid()
    if _TOKEN is None or _TOKEN[0] != pid:
        _TOKEN = (pid, uuid.uuid4().hex)
    job = os.environ.get("SLURM_JOB_ID", "")
    if os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ.get('SLURM_ARRAY_JOB_ID', job)}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid), "job": job,
            "token": _TOKEN[1]}


def read_claim(path: str | Path) -> dict[str, Any] | None:
    """The owner record of a claim; None when absent or unreadable (a directory left by an old vssl)."""
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def fs_now(directory: Path) -> float:
    """The file system's current time, as the mtime of a file touched now in ``directory`` (node clocks
    drift; the times of files other nodes wrote there are compared with this one)."""
    clock = directory / f".clock-{socket.gethostname()}-{os.getpid()}"
    try:
        clock.touch()
        now = clock.stat().st_mtime
        clock.unlink()
        return now
    except OSError:
        return time.time()


def owner_alive(record: dict[str, Any] | None, path: Path, stale_s: float | None = None) -> bool:
    """False when the claim at ``path`` (holding ``record``) belongs to a dead process."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return False  # gone meanwhile
    stale_s = stale_after() if stale_s is None else stale_s
    if record is not None and record.get("host") == socket.gethostname():
        pid = int(record.get("pid", -1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's live process
        start = record.get("start", "")
        return not (start and _process_start(pid) and _process_start(pid) != start)  # reused pid: dead
    return fs_now(path.parent) - mtime < stale_s


def try_claim(path: str | Path, stale_s: float | None = None, what: str = "") -> bool:
    """Claim ``path`` for this process: True when it is (now) ours, False when a live owner holds it.

    A dead owner's claim is taken over: it is renamed aside (only one of several takers
    succeeds), and put back if what was moved is not the record judged dead (a fresh claim made
    meanwhile by another taker).
    """
    path = Path(path)
    mine = owner()
    for _ in range(3):
        if _link_claim(path, mine):
            return True
        held = read_claim(path)
        if held is not None and held.get("token") == mine["token"]:
            return True
        if owner_alive(held, path, stale_s):
            return False
        aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue  # released or taken meanwhile: try again
        moved = read_claim(aside)
        if moved != held and moved is not None:  # a live claim made meanwhile: put it back
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
            os.unlink(aside)
            return False
        _remove(aside)
        log.warning("took over %s%s from a dead owner (%s)", what or path, "" if not what else f" ({path})",
                    _describe(held))
    return False


def _link_claim(path: Path, record: dict[str, Any]) -> bool:
    tmp = path.with_name(f".{path.name}.{record['token'][:12]}.{uuid.uuid4().hex[:6]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w") as f:
        json.dump({**record, "claimed_at": time.time()}, f)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:  # a file system without hard links: say so in one line
        raise VsslError(f"cannot claim {path}: the file system refused a hard link ({exc.strerror}); "
                        "claims need a file system with hard links (local, NFS, Lustre)") from None
    finally:
        os.unlink(tmp)


def _remove(path: Path) -> None:
    try:
        if path.is_dir():
            os.rmdir(path)
        else:
            path.unlink()
    except OSError:
        pass


def _describe(record: dict[str, Any] | None) -> str:
    if record is None:
        return "owner unknown"
    job = f", job {record['job']}" if record.get("job") else ""
    return f"host {record.get('host')}, pid {record.get('pid')}{job}"


def holds(path: str | Path) -> bool:
    """True when this process owns the claim at ``path``."""
    record = read_claim(path)
    return record is not None and record.get("token") == owner()["token"]


def release(path: str | Path) -> None:
    """Drop this process's claim (another's is left alone)."""
    if holds(path):
        _remove(Path(path))


def describe_owner(path: str | Path) -> str:
    """Who holds the claim at ``path``, for messages."""
    return _describe(read_claim(path))


class Heartbeat:
    """Touches this process's claims every ``stale_s / 4`` seconds so owners on other hosts see them alive.

    A daemon thread: it dies with the process, so a killed owner's claims age and are taken over.
    """

    def __init__(self, stale_s: float | None = None) -> None:
        self.period = (stale_after() if stale_s is None else stale_s) / 4
        self.paths: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, path: Path) -> None:
        with self._lock:
            self.paths.add(Path(path))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vssl-claims-heartbeat", daemon=True)
            self._thread.start()

    def discard(self, path: Path) -> None:
        with self._lock:
            self.paths.discard(Path(path))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            with self._lock:
                paths = list(self.paths)
            for p in paths:
                try:
                    os.utime(p)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (SLURM's time limit, pre-emption, ``scancel``) raises ``SystemExit(143)`` inside the block,
    so ``finally`` clauses run and this process's claims and locks are released at once instead of
    waiting to be found dead. Outside the main thread (where handlers cannot be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
