"""Fixtures for the data-plane tests (helpers live in iscsi_rig.py, a module name no other
test directory uses)."""

from iscsi_rig import rig

__all__ = ["rig"]
