"""Fixtures for the zbs-lite server tests."""

from __future__ import annotations

import pytest
from zl_helpers import Api

from zbs_lite.testing import ZbsLiteProcess


@pytest.fixture
def api(zbs_lite: ZbsLiteProcess) -> Api:
    return Api(zbs_lite)
