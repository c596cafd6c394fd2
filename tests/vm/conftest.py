"""One rig per session: a network namespace, zbs-lite, the controller, and two node VMs.

Booting a stock kernel under software emulation takes most of a minute, so both VMs boot
once, in parallel, and every scenario shares them; each test leaves the nodes as it found
them (nothing staged, no session), which tests/vm/test_*.py assert as they go. Node ``a``
gets the zbs_node role (its real target: open-iscsi tuning, multipath configuration) and
runs the node plugin with multipath on; node ``b`` keeps Debian's stock multipath-tools
configuration (``find_multipaths strict``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rig import Rig


@pytest.fixture(scope="session")
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    if os.geteuid() != 0:
        pytest.skip("the VM rig needs root (network namespace, taps)")
    # A short path: unix sockets (ssh control, forwarded CSI sockets) live in it.
    work = Path(tempfile.mkdtemp(prefix="zbs-vm-", dir="/tmp"))
    r = Rig(work)
    try:
        r.start()
        print(
            f"\nrig: {r.accel.note}; image {r.image.name}; boot to ssh "
            + ", ".join(f"{vm.name} {vm.boot_seconds:.0f} s" for vm in r.vms)
        )
        r.apply_node_role(r.vms[0])
        yield r
    finally:
        r.close()
        if os.environ.get("ZBS_VM_KEEP") or request.session.testsfailed:
            print(f"rig work directory kept (logs, consoles): {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


RESULTS: dict[str, float] = {}


@pytest.fixture
def results() -> dict[str, float]:
    """Figures a scenario measured (failover pauses), printed at the end of the run."""
    return RESULTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.section("vm figures (TCG timings are not production timings)")
        for key, value in RESULTS.items():
            terminalreporter.write_line(f"{key}: {value:.2f}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Booting the VMs under software emulation counts against the first test's time.
    for item in items:
        item.add_marker(pytest.mark.timeout(2400))


@pytest.fixture
def undo() -> Iterator[list[Callable[[], object]]]:
    """Clean-up steps a test registers as it creates things; run (best effort) even when it fails,
    so one failing scenario does not leave a staged volume that changes the next one's outcome."""
    steps: list[Callable[[], object]] = []
    yield steps
    for step in reversed(steps):
        with contextlib.suppress(Exception):
            step()
