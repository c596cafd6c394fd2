"""Command and status numbering of one session (RFC 7143 section 4.2.2): the CmdSN window and StatSN."""

from __future__ import annotations

from zbs_lite.iscsi.pdu import Pdu, serial_le, serial_lt

QUEUE_DEPTH = 128


class Numbering:
    def __init__(self) -> None:
        self.exp_cmd_sn = 0
        self.stat_sn = 0
        self.inflight = 0  # non-immediate commands accepted and not yet answered

    def max_cmd_sn(self) -> int:
        """The window closes as commands are in flight: at most QUEUE_DEPTH at once."""
        return (self.exp_cmd_sn + QUEUE_DEPTH - 1 - self.inflight) & 0xFFFFFFFF

    def next_stat_sn(self) -> int:
        sn = self.stat_sn
        self.stat_sn = (sn + 1) & 0xFFFFFFFF
        return sn

    def accept(self, pdu: Pdu) -> bool:
        """Advance ExpCmdSN for a non-immediate command; False if it lies outside the window."""
        if pdu.immediate:
            return True
        cmd_sn = pdu.u32(24)
        if serial_lt(cmd_sn, self.exp_cmd_sn) or serial_lt(self.max_cmd_sn(), cmd_sn):
            return False
        if serial_le(self.exp_cmd_sn, cmd_sn):
            self.exp_cmd_sn = (cmd_sn + 1) & 0xFFFFFFFF
        return True
