"""The CloudTower v2 iSCSI subset: one entry point per operation name, over the parts that do the work.

Reads go through :mod:`zbs_lite.queries`, mutations through :mod:`zbs_lite.mutations` (rows and
tasks in one transaction), and the tasks' data side through :mod:`zbs_lite.tasks` and
:mod:`zbs_lite.effects`. Tasks are persisted: one interrupted by a crash is run again at the
next start (every data step is idempotent) after :func:`zbs_lite.recovery.reconcile`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from zbs_lite import recovery
from zbs_lite.auth import Tokens, check_credentials
from zbs_lite.db import Database, new_id
from zbs_lite.model import CLUSTER, CONNECTION, LUN, SNAPSHOT, TARGET, TASK
from zbs_lite.mutations import MUTATIONS, Mutation, MutationContext, run
from zbs_lite.queries import Queries
from zbs_lite.render import Renderer
from zbs_lite.settings import Settings
from zbs_lite.storage import Pool
from zbs_lite.tasks import TaskExecutor, TaskRunner, TaskStore
from zbs_lite.throttle import LoginThrottle


class Api:
    def __init__(self, db: Database, pool: Pool, settings: Settings) -> None:
        self.db = db
        self.pool = pool
        self.settings = settings
        self.tokens = Tokens(settings.token_ttl)
        self.throttle = LoginThrottle()  # shared with the data plane's CHAP logins
        self.cluster_id = self._ensure_cluster()
        self.set_vip(settings.vip)
        self.tasks = TaskStore(db, self.cluster_id)
        self.runner = TaskRunner(TaskExecutor(db, pool).run)
        renderer = Renderer(settings, self.cluster_id, pool)
        self.queries = Queries(db, renderer)
        self._mutations = MutationContext(db, self.tasks, self.runner, renderer, settings)
        q = self.queries
        self.ops: dict[str, Callable[[Any], Any]] = {
            "get-clusters": lambda b: q.get(CLUSTER, b),
            "get-iscsi-targets": lambda b: q.get(TARGET, b),
            "get-iscsi-targets-connection": lambda b: q.count(TARGET, b),
            "get-iscsi-luns": lambda b: q.get(LUN, b),
            "get-iscsi-luns-connection": lambda b: q.count(LUN, b),
            "get-iscsi-lun-snapshots": lambda b: q.get(SNAPSHOT, b),
            "get-iscsi-lun-snapshots-connection": lambda b: q.count(SNAPSHOT, b),
            "get-iscsi-connections": lambda b: q.get(CONNECTION, b),
            "get-iscsi-connections-connection": lambda b: q.count(CONNECTION, b),
            "get-tasks": lambda b: q.get(TASK, b),
            "get-tasks-connection": lambda b: q.count(TASK, b),
        }
        for op, mutation in MUTATIONS.items():
            self.ops[op] = self._mutation(mutation)

    def _mutation(self, cls: type[Mutation]) -> Callable[[Any], Any]:
        return lambda body: run(cls(self._mutations, body))

    def call(self, op: str, body: Any) -> Any:
        """One authenticated operation (what ``POST /v2/api/<op>`` runs), by name."""
        return self.ops[op](body)

    def login(self, body: Any, peer: str) -> dict[str, Any]:
        """A token for the right credentials; ``peer`` (the client's address) is what failures back off by."""
        check_credentials(body, self.settings, self.throttle, peer)
        return {"task_id": None, "data": {"token": self.tokens.issue()}}

    def pending_tasks(self) -> list[str]:
        return self.tasks.pending()

    def reconcile(self) -> dict[str, int]:
        return recovery.reconcile(self.db, self.pool)

    def _ensure_cluster(self) -> str:
        s = self.settings
        with self.db.write() as conn:
            row = conn.execute("SELECT id FROM clusters").fetchone()
            if row is None:
                cid = new_id()
                conn.execute(
                    "INSERT INTO clusters (id, local_id, name, ip, iscsi_vip, management_vip, version, type,"
                    " architecture, connect_state) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        cid,
                        str(uuid.uuid4()),
                        s.cluster_name,
                        s.api_host,
                        "",
                        s.api_host,
                        "5.7.0-zbs-lite",
                        "SMTX_ZBS",
                        "X86_64",
                        "CONNECTED",
                    ),
                )
            else:
                cid = row["id"]
            conn.execute(
                "UPDATE clusters SET name=?, ip=?, management_vip=? WHERE id=?",
                (s.cluster_name, s.api_host, s.api_host, cid),
            )
        return str(cid)

    def set_vip(self, portal: str) -> None:
        """``iscsi_vip`` is an address in ZBS; zbs-lite adds ``:port`` when it is not 3260."""
        self.settings.vip = portal
        host, _, port = portal.rpartition(":")
        with self.db.write() as conn:
            conn.execute(
                "UPDATE clusters SET iscsi_vip = ? WHERE id = ?", (host if port == "3260" else portal, self.cluster_id)
            )
