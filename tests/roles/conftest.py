"""Fixtures of the role tests."""

from __future__ import annotations

from .helpers import collections_path, playbook_runner

__all__ = ["collections_path", "playbook_runner"]
