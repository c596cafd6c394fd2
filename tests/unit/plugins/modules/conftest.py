# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the real modules (real AnsibleModule, real client) against FakeZbs at the HTTP layer."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict
from unittest import mock

import pytest
from ansible.module_utils.common import warnings
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_ansible import CONNECTION_OPTIONS
from ansible_collections.smartx.zbs.tests.unit.plugins.modules.fake_zbs import FakeZbs

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    import contextlib

    from ansible.module_utils import basic

    @contextlib.contextmanager
    def patch_module_args(args=None):
        with mock.patch.object(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode()):
            yield


CONNECTION = {"host": "https://zbs.unit.test", "username": "admin", "password": "secret-pass"}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeZbs:
    """The fake API; every requests.Session in the test talks to it (and nothing else)."""
    api = FakeZbs()
    for option in CONNECTION_OPTIONS:
        monkeypatch.delenv(option.env, raising=False)

    def request(session: Any, method: str, url: str, **kwargs: Any) -> Any:
        return api.handle(session, method, url, **kwargs)

    monkeypatch.setattr("requests.Session.request", request)
    return api


@pytest.fixture
def run_module(capsys: pytest.CaptureFixture) -> Callable[..., Dict[str, Any]]:
    """Run ``module.main()`` with ``args``; returns the JSON result (``failed`` set on fail_json)."""

    def _run(
        module: Any, args: Dict[str, Any], *, check: bool = False, diff: bool = False, connection: bool = True
    ) -> Dict[str, Any]:
        params = dict(CONNECTION) if connection else {}
        params.update(args)
        params.update(_ansible_check_mode=check, _ansible_diff=diff)
        capsys.readouterr()
        # Warnings are process-global in ansible-core; each run here stands for a separate process.
        warnings._global_warnings.clear()
        with patch_module_args(params), pytest.raises(SystemExit) as exc:
            module.main()
        out = json.loads(capsys.readouterr().out)
        assert (exc.value.code == 0) != bool(out.get("failed")), out
        if "warnings" in out:  # ansible-core 2.19 wraps each warning in an event record
            out["warnings"] = [w["event"]["msg"] if isinstance(w, dict) else w for w in out["warnings"]]
        return out

    return _run
