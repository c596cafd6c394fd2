"""What one zbs-lite instance is told at start: the API user, the cluster's name and addresses, task pacing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    username: str
    password: str
    cluster_name: str = "zbs-lite"
    task_delay: float = 0.05
    token_ttl: float = 3600.0
    api_host: str = "127.0.0.1"
    vip: str = "127.0.0.1:3260"
    chunk_ips: tuple[str, ...] = ()
