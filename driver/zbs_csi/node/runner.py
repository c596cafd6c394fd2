"""The one place every host command goes through.

Each command is an argv list (never a shell string), has a timeout, runs with an empty
environment and a fixed PATH (``env -i`` semantics), and receives secrets only on stdin.
A host-exec strategy decides where it runs: here (``none``), inside the host's root
(``chroot /host``) or in the host's namespaces (``nsenter -t 1``) — the kernel connector
needs the host's iscsiadm and multipathd. Tests swap in :class:`RecordingRunner`.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

FIXED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CommandError(Exception):
    def __init__(self, argv: Sequence[str], rc: int, stderr: str) -> None:
        self.argv = list(argv)
        self.rc = rc
        self.stderr = stderr.strip()
        super().__init__(f"{argv[0]} exited {rc}: {self.stderr[-500:]}")


def _masked(argv: list[str], secrets: Sequence[str]) -> list[str]:
    return ["***" if any(s and s in a for s in secrets) else a for a in argv]


def _kill_bounded(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a timed-out command, waiting for it only briefly.

    A command blocked in the kernel (``umount`` flushing to a device whose I/O never
    completes sits in D state) dies only when that I/O ends. The caller must get its error
    now, so the process is left to a reaper thread instead of an unbounded ``wait()``.
    """
    proc.kill()
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        log.warning("pid %d does not die (blocked in the kernel); reaping it later", proc.pid)
        threading.Thread(target=proc.communicate, name=f"reap-{proc.pid}", daemon=True).start()


@dataclass
class Result:
    argv: list[str]
    rc: int
    stdout: str = ""
    stderr: str = ""


def host_prefix(strategy: str, host_root: str = "/host") -> list[str]:
    if strategy == "none":
        return []
    if strategy == "chroot":
        return ["chroot", host_root]
    if strategy == "nsenter":
        return ["nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--"]
    raise ValueError(f"unknown host-exec strategy {strategy!r}")


@dataclass
class Runner:
    default_timeout: float = 120.0

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: str | None = None,
        check: bool = True,
        host: bool = False,
        redact: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Result:
        """Run ``argv``; ``host`` routes it through the host-exec strategy (no-op here).

        ``redact`` lists values (iscsiadm's CHAP password) masked in logs and errors; ``env``
        adds variables to the fixed environment (libiscsi reads its CHAP secret from there).
        """
        argv = list(argv)
        log.debug("run", extra={"fields": {"argv": _masked(argv, redact)}})
        limit = timeout or self.default_timeout
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={"PATH": FIXED_PATH, "LC_ALL": "C", **(env or {})},
            )
        except FileNotFoundError:
            raise CommandError(_masked(argv, redact), 127, f"{argv[0]}: not found") from None
        try:
            stdout, stderr = proc.communicate(stdin, timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_bounded(proc)
            raise CommandError(_masked(argv, redact), -1, f"timed out after {limit}s") from None
        res = Result(argv, proc.returncode, stdout, stderr)
        if check and proc.returncode != 0:
            err = stderr or stdout
            for secret in redact:
                err = err.replace(secret, "***")
            raise CommandError(_masked(argv, redact), proc.returncode, err)
        return res


@dataclass
class HostRunner(Runner):
    """Runs ``host=True`` commands through chroot or nsenter."""

    strategy: str = "none"
    host_root: str = "/host"

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: str | None = None,
        check: bool = True,
        host: bool = False,
        redact: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Result:
        full = [*host_prefix(self.strategy, self.host_root), *argv] if host else list(argv)
        return super().run(full, timeout=timeout, stdin=stdin, check=check, redact=redact, env=env)


Responder = Callable[[list[str], "str | None"], "Result | None"]


@dataclass
class RecordingRunner(Runner):
    """Records every command instead of running it; responders script the host's answers.

    Used where the real command cannot run here (the kernel iSCSI initiator): a responder
    returns a :class:`Result` for the argv it recognises, else the command "succeeds" silently.
    """

    strategy: str = "none"
    host_root: str = "/host"
    calls: list[list[str]] = field(default_factory=list)
    stdins: list[str | None] = field(default_factory=list)
    responders: list[Responder] = field(default_factory=list)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: str | None = None,
        check: bool = True,
        host: bool = False,
        redact: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Result:
        full = [*host_prefix(self.strategy, self.host_root), *argv] if host else list(argv)
        log.debug("run", extra={"fields": {"argv": _masked(full, redact)}})
        self.calls.append(full)
        self.stdins.append(stdin)
        for responder in self.responders:
            res = responder(list(argv), stdin)
            if res is not None:
                if check and res.rc != 0:
                    raise CommandError(_masked(full, redact), res.rc, res.stderr)
                return res
        return Result(full, 0)
