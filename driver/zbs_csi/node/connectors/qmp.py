"""A minimal QMP client for talking to qemu-storage-daemon over its unix socket."""

from __future__ import annotations

import json
import socket
from typing import Any


class QmpError(Exception):
    pass


def qmp_execute(sock_path: str, command: str, arguments: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        reader = s.makefile("r", encoding="utf-8")

        def send(cmd: str, args: dict[str, Any] | None) -> Any:
            msg: dict[str, Any] = {"execute": cmd}
            if args:
                msg["arguments"] = args
            s.sendall(json.dumps(msg).encode() + b"\n")
            while True:
                line = reader.readline()
                if not line:
                    raise QmpError(f"{cmd}: connection closed")
                reply = json.loads(line)
                if "return" in reply:
                    return reply["return"]
                if "error" in reply:
                    raise QmpError(f"{cmd}: {reply['error'].get('desc', reply['error'])}")

        greeting = json.loads(reader.readline() or "{}")
        if "QMP" not in greeting:
            raise QmpError("no QMP greeting")
        send("qmp_capabilities", None)
        return send(command, arguments)
