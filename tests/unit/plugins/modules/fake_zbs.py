# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An in-memory CloudTower v2 iSCSI API behind ``requests.Session.request``.

Unit tests patch only the HTTP boundary: the real module, the real AnsibleModule and the
real client run, and this object answers their POSTs the way the API does (token login,
``where`` filters with nested relations, ``first``/``after`` paging, tasks polled through
``get-tasks``, ErrorBody on refusals). It records every operation so tests can assert what
was read and what was written. The integration targets run the same modules against the
real zbs-lite; this stand-in exists so units run in a second without a server.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any, Callable, Dict, List, Optional, Tuple

import requests

TOKEN = "unit-test-token"


class ApiRefusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# The where operators zbs-lite serves (zbs_lite/where.py), longest suffix first. These unit
# tests run on a copy of the collection without zbs_lite, so the fake keeps this Python
# rendering of the same rules; tests/client/test_fake_api_parity.py runs one corpus of filters
# against both over the same data and fails on any difference.
_OPERATORS = (
    "not_starts_with", "not_ends_with", "not_contains", "starts_with", "ends_with", "contains",
    "not_in", "not", "in", "lte", "gte", "lt", "gt",
)  # fmt: skip


def _split(key: str, obj: Dict[str, Any]) -> Tuple[str, str]:
    if key in obj:
        return key, "eq"
    for op in _OPERATORS:
        if key.endswith("_" + op):
            return key[: -len(op) - 1], op
    return key, "eq"


def _field_matches(have: Any, op: str, want: Any) -> bool:
    """One operator as SQL evaluates it: a null field fails every positive test and passes
    every negative one; a null operand tests for null (eq/not) or is ignored (the rest)."""
    if want is None:
        return {"eq": have is None, "not": have is not None}.get(op, True)
    negative = op.startswith("not")
    if have is None:
        return negative
    if op in ("in", "not_in"):
        return (have in want) != negative
    if op.endswith(("contains", "starts_with", "ends_with")):
        text, base = str(have), op.removeprefix("not_")
        hit = (
            want in text
            if base == "contains"
            else text.startswith(want)
            if base == "starts_with"
            else text.endswith(want)
        )
        return hit != negative
    if op in ("lt", "lte", "gt", "gte"):
        return {"lt": have < want, "lte": have <= want, "gt": have > want, "gte": have >= want}[op]
    return (have == want) != negative


Related = Callable[[Dict[str, Any], str], Any]


def _match(obj: Dict[str, Any], where: Optional[Dict[str, Any]], related: Related) -> bool:
    """The CloudTower ``where`` language over one object; ``related(obj, key)`` gives the full
    object of a to-one relation (or None), or the list of a to-many one (``luns``)."""
    for key, want in (where or {}).items():
        if key in ("AND", "OR", "NOT"):
            subs = [_match(obj, w, related) for w in (want if isinstance(want, list) else [want])]
            if subs and not {"AND": all(subs), "OR": any(subs), "NOT": not any(subs)}[key]:
                return False
            continue
        base, quant = key.rpartition("_")[::2]
        if quant in ("some", "none", "every") and isinstance(related(obj, base), list):
            items = [_match(x, want, related) for x in related(obj, base)]
            if not {"some": any(items), "none": not any(items), "every": all(items)}[quant]:
                return False
            continue
        if isinstance(want, dict) or (want is None and isinstance(obj.get(key), dict)):
            other = related(obj, key)
            if not (other is None if want is None else other is not None and _match(other, want, related)):
                return False
            continue
        field, op = _split(key, obj)
        if not _field_matches(obj.get(field), op, want):
            return False
    return True


class FakeZbs:
    """State of one fake cluster plus the HTTP handler that serves it."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.calls: List[Tuple[str, Any]] = []
        self.cluster = {"id": "cl-1", "local_id": "00000000-0000-4000-8000-000000000001", "name": "unit"}
        self.targets: Dict[str, Dict[str, Any]] = {}
        self.luns: Dict[str, Dict[str, Any]] = {}
        self.snapshots: Dict[str, Dict[str, Any]] = {}
        self.connections: List[Dict[str, Any]] = []
        self.tasks: Dict[str, Dict[str, Any]] = {}
        #: op name -> error message: the next task of that op ends FAILED with it
        self.fail_tasks: Dict[str, str] = {}
        #: op names whose tasks never finish (stay EXECUTING), for wait_timeout
        self.hang_tasks: set = set()
        #: snapshot id -> the LUN size it was taken at (the API does not show it; rollback restores it)
        self.snapshot_sizes: Dict[str, int] = {}

    # ------------------------------------------------------------------ helpers for tests

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def ops(self) -> List[str]:
        return [call[0] for call in self.calls]

    def writes(self) -> List[str]:
        return [op for op in self.ops() if not op.startswith("get-") and op != "login"]

    def add_target(self, name: str, **fields: Any) -> Dict[str, Any]:
        return self._create_target(dict({"name": name, "cluster_id": self.cluster["id"]}, **fields))

    def add_lun(self, target: str, name: str, size: int = 1 << 30, **fields: Any) -> Dict[str, Any]:
        t = next(t for t in self.targets.values() if t["name"] == target)
        return self._create_lun(dict({"name": name, "iscsi_target_id": t["id"], "assigned_size": size}, **fields))

    def add_snapshot(self, target: str, lun: str, name: str) -> Dict[str, Any]:
        lun_obj = next(x for x in self.luns.values() if x["name"] == lun and x["iscsi_target"]["name"] == target)
        return self._create_snapshot({"iscsi_lun_id": lun_obj["id"], "name": name})

    def lun(self, target: str, name: str) -> Optional[Dict[str, Any]]:
        for x in self.luns.values():
            if x["name"] == name and x["iscsi_target"]["name"] == target:
                return x
        return None

    def target(self, name: str) -> Optional[Dict[str, Any]]:
        return next((t for t in self.targets.values() if t["name"] == name), None)

    # ------------------------------------------------------------------ HTTP boundary

    def handle(self, session: Any, method: str, url: str, **kwargs: Any) -> requests.Response:
        op = url.rsplit("/", 1)[-1]
        body = kwargs.get("json")
        if body is None and kwargs.get("data"):
            body = json.loads(kwargs["data"])
        self.calls.append((op, copy.deepcopy(body)))
        headers = kwargs.get("headers") or {}
        try:
            if op != "login" and headers.get("Authorization") != TOKEN:
                raise ApiRefusal(401, "token missing or expired")
            return self._response(200, self._dispatch(op, body or {}))
        except ApiRefusal as exc:
            return self._response(exc.status, {"message": exc.message, "status": exc.status, "path": f"/{op}"})

    @staticmethod
    def _response(status: int, payload: Any) -> requests.Response:
        resp = requests.Response()
        resp.status_code = status
        resp._content = json.dumps(payload).encode()
        resp.headers["Content-Type"] = "application/json"
        resp.reason = "OK" if status == 200 else "Error"
        return resp

    def _dispatch(self, op: str, body: Any) -> Any:
        if op == "login":
            if body.get("password") != "secret-pass":
                raise ApiRefusal(401, "invalid username or password")
            return {"task_id": None, "data": {"token": TOKEN}}
        if op.startswith("get-") and op.endswith("-connection"):
            return {"aggregate": {"count": len(self._query(op[4 : -len("-connection")], {"where": body.get("where")}))}}
        if op.startswith("get-"):
            return self._query(op[4:], body)
        handler: Callable[[Any], Any] = getattr(self, "_op_" + op.replace("-", "_"))
        return handler(body)

    def _collection(self, resource: str) -> List[Dict[str, Any]]:
        return {
            "clusters": [self.cluster],
            "iscsi-targets": list(self.targets.values()),
            "iscsi-luns": list(self.luns.values()),
            "iscsi-lun-snapshots": list(self.snapshots.values()),
            "iscsi-connections": self.connections,
            "tasks": list(self.tasks.values()),
        }[resource]

    def related(self, obj: Dict[str, Any], key: str) -> Any:
        """The full object behind a relation field (``iscsi_target``, ``iscsi_lun``, ``cluster``),
        or a target's LUNs for ``luns``."""
        if key == "luns" and "iqn_name" in obj:
            return [x for x in self.luns.values() if x["iscsi_target"]["id"] == obj["id"]]
        ref = obj.get(key)
        if not isinstance(ref, dict):
            return None
        table = {"iscsi_target": self.targets, "iscsi_lun": self.luns, "cluster": {self.cluster["id"]: self.cluster}}
        return table.get(key, {}).get(ref.get("id"))

    def matches(self, obj: Dict[str, Any], where: Optional[Dict[str, Any]]) -> bool:
        return _match(obj, where, self.related)

    def _query(self, resource: str, body: Dict[str, Any]) -> List[Dict[str, Any]]:
        items = sorted(
            (x for x in self._collection(resource) if self.matches(x, body.get("where"))), key=lambda x: x["id"]
        )
        if body.get("after") is not None:
            ids = [x["id"] for x in items]
            items = items[ids.index(body["after"]) + 1 :] if body["after"] in ids else []
        items = items[body.get("skip") or 0 :]
        if body.get("first") is not None:
            items = items[: body["first"]]
        return copy.deepcopy(items)

    def _task(self, op: str, data: Dict[str, Any]) -> Dict[str, Any]:
        task_id = self.new_id("task")
        failure = self.fail_tasks.pop(op, None)
        status = "FAILED" if failure else "SUCCESSED"
        self.tasks[task_id] = {
            "id": task_id,
            "status": "EXECUTING" if op in self.hang_tasks else status,
            "error_code": "EFAKE" if failure else None,
            "error_message": failure,
        }
        return {"task_id": task_id, "data": copy.deepcopy(data)}

    def _one(self, collection: Dict[str, Dict[str, Any]], where: Dict[str, Any], kind: str) -> Dict[str, Any]:
        return self._all(collection, where, kind)[0]

    def add_connection(self, target: str, iqn: Optional[str], ip: str = "10.0.0.11") -> Dict[str, Any]:
        """A live session to ``target``; ``iqn`` None is how CloudTower reports one (IP only)."""
        t = self.target(target)
        assert t is not None
        conn = {"id": self.new_id("conn"), "initiator_ip": ip, "iscsi_target": {"id": t["id"], "name": t["name"]}}
        if iqn is not None:
            conn["initiator_iqn"] = iqn
        self.connections.append(conn)
        return conn

    def _all(self, collection: Dict[str, Dict[str, Any]], where: Dict[str, Any], kind: str) -> List[Dict[str, Any]]:
        found = [x for x in collection.values() if self.matches(x, where)]
        if not found:
            raise ApiRefusal(404, f"{kind} not found")
        return found

    def _refresh_target(self, target: Dict[str, Any]) -> None:
        target["luns"] = [
            {"id": x["id"], "name": x["name"]} for x in self.luns.values() if x["iscsi_target"]["id"] == target["id"]
        ]

    # ------------------------------------------------------------------ targets

    def _create_target(self, d: Dict[str, Any]) -> Dict[str, Any]:
        name = d["name"].lower()
        if self.target(name):
            raise ApiRefusal(400, f"target {name} already exists")
        t = {
            "id": self.new_id("tgt"),
            "local_id": f"00000000-0000-4000-8000-{next(self._ids):012d}",
            "name": name,
            "iqn_name": f"iqn.2016-02.com.smartx:system:{name}",
            "description": d.get("description", ""),
            "cluster": {"id": self.cluster["id"], "name": self.cluster["name"]},
            "replica_num": d.get("replica_num", 2),
            "thin_provision": d.get("thin_provision", True),
            "stripe_num": d.get("stripe_num", 8),
            "stripe_size": d.get("stripe_size", 262144),
            "ip_whitelist": d.get("ip_whitelist", "*/*"),
            "iqn_whitelist": d.get("iqn_whitelist", "*/*"),
            "chap_enabled": d.get("chap_enabled", False),
            "chap_name": d.get("chap_name", ""),
            "chap_secret": d.get("chap_secret", ""),
            "initiator_chaps": d.get("initiator_chaps", []),
            "luns": [],
            "entityAsyncStatus": None,
        }
        for q in ("iops", "iops_rd", "iops_wr", "bps", "bps_rd", "bps_wr"):
            t[q] = d.get(q, 0)
        self.targets[t["id"]] = t
        return t

    def _op_create_iscsi_target(self, body: List[Dict[str, Any]]) -> Any:
        return [self._task("create-iscsi-target", self._create_target(d)) for d in body]

    def _op_update_iscsi_target(self, body: Dict[str, Any]) -> Any:
        t = self._one(self.targets, body["where"], "target")
        t.update(body["data"])
        return [self._task("update-iscsi-target", t)]

    def _op_delete_iscsi_target(self, body: Dict[str, Any]) -> Any:
        t = self._one(self.targets, body["where"], "target")
        self._refresh_target(t)
        if t["luns"]:
            raise ApiRefusal(400, f"target {t['name']} still has {len(t['luns'])} LUN(s)")
        del self.targets[t["id"]]
        return [self._task("delete-iscsi-target", {"id": t["id"]})]

    # ------------------------------------------------------------------ LUNs

    def _create_lun(self, d: Dict[str, Any]) -> Dict[str, Any]:
        t = self.targets.get(d["iscsi_target_id"])
        if t is None:
            raise ApiRefusal(404, "target not found")
        if any(x["name"] == d["name"] and x["iscsi_target"]["id"] == t["id"] for x in self.luns.values()):
            raise ApiRefusal(400, f"LUN {d['name']} already exists in target {t['name']}")
        used = {x["lun_id"] for x in self.luns.values() if x["iscsi_target"]["id"] == t["id"]}
        lun_id = d.get("lun_id") or min(set(range(1, 256)) - used)
        lun = {
            "id": self.new_id("lun"),
            "local_id": f"00000000-0000-4000-9000-{next(self._ids):012d}",
            "name": d["name"],
            "lun_id": lun_id,
            "iscsi_target": {"id": t["id"], "name": t["name"]},
            "assigned_size": d["assigned_size"],
            "replica_num": d.get("replica_num", t["replica_num"]),
            "thin_provision": d.get("thin_provision", t["thin_provision"]),
            "allowed_initiators": d.get("allowed_initiators", "*/*"),
            "snapshot_num": 0,
            "entityAsyncStatus": None,
        }
        for q in ("iops", "iops_rd", "iops_wr", "bps", "bps_rd", "bps_wr"):
            lun[q] = d.get(q, 0)
        self.luns[lun["id"]] = lun
        self._refresh_target(t)
        return lun

    def _op_create_iscsi_lun(self, body: List[Dict[str, Any]]) -> Any:
        return [self._task("create-iscsi-lun", self._create_lun(d)) for d in body]

    def _op_update_iscsi_lun(self, body: Dict[str, Any]) -> Any:
        luns = self._all(self.luns, body["where"], "LUN")
        data = dict(body["data"])
        data.pop("assigned_size_unit", None)
        for lun in luns:
            if data.get("assigned_size") is not None and data["assigned_size"] < lun["assigned_size"]:
                raise ApiRefusal(400, "a LUN cannot shrink")
        out = []
        for lun in luns:
            lun.update(data)
            out.append(self._task("update-iscsi-lun", lun))
        return out

    def _op_delete_iscsi_lun(self, body: Dict[str, Any]) -> Any:
        luns = self._all(self.luns, body["where"], "LUN")
        remove = (body.get("data") or {}).get("remove_snapshot")
        for lun in luns:
            snaps = [s for s in self.snapshots.values() if s["iscsi_lun"]["id"] == lun["id"]]
            if snaps and not remove:
                raise ApiRefusal(400, f"LUN {lun['name']} has {len(snaps)} snapshot(s); set remove_snapshot")
        out = []
        for lun in luns:
            for s in [s for s in self.snapshots.values() if s["iscsi_lun"]["id"] == lun["id"]]:
                del self.snapshots[s["id"]]
            del self.luns[lun["id"]]
            self._refresh_target(self.targets[lun["iscsi_target"]["id"]])
            out.append(self._task("delete-iscsi-lun", {"id": lun["id"]}))
        return out

    def _op_clone_iscsi_lun_from_snapshot(self, body: List[Dict[str, Any]]) -> Any:
        out = []
        for d in body:
            snap = self._one(self.snapshots, {"id": d["snapshot_id"]}, "snapshot")
            src = self.luns[snap["iscsi_lun"]["id"]]
            lun = self._create_lun(
                {
                    "name": d["name"],
                    "iscsi_target_id": d["iscsi_target_id"],
                    "assigned_size": self.snapshot_sizes[snap["id"]],
                    "replica_num": src["replica_num"],
                }
            )
            out.append(self._task("clone-iscsi-lun-from-snapshot", lun))
        return out

    def _op_copy_iscsi_lun(self, body: List[Dict[str, Any]]) -> Any:
        out = []
        for d in body:
            src = self._one(self.luns, {"id": d["src_lun_id"]}, "LUN")
            lun = self._create_lun(
                {
                    "name": d["name"],
                    "iscsi_target_id": d.get("dest_iscsi_target_id") or src["iscsi_target"]["id"],
                    "assigned_size": src["assigned_size"],
                    "replica_num": src["replica_num"],
                }
            )
            out.append(self._task("copy-iscsi-lun", lun))
        return out

    def _op_rollback_iscsi_lun_from_snapshot(self, body: List[Dict[str, Any]]) -> Any:
        out = []
        for d in body:
            lun = self._one(self.luns, {"id": d["lun_id"]}, "LUN")
            snap = self._one(self.snapshots, {"id": d["snapshot_id"]}, "snapshot")
            lun["assigned_size"] = self.snapshot_sizes[snap["id"]]
            out.append(self._task("rollback-iscsi-lun-from-snapshot", lun))
        return out

    # ------------------------------------------------------------------ snapshots

    def _create_snapshot(self, d: Dict[str, Any]) -> Dict[str, Any]:
        lun = self._one(self.luns, {"id": d["iscsi_lun_id"]}, "LUN")
        snap = {
            "id": self.new_id("snap"),
            "local_id": f"00000000-0000-4000-a000-{next(self._ids):012d}",
            "name": d["name"],
            "iscsi_lun": {"id": lun["id"], "name": lun["name"]},
            "iscsi_target": dict(lun["iscsi_target"]),
            "unique_size": 0,
            "entityAsyncStatus": None,
        }
        self.snapshots[snap["id"]] = snap
        self.snapshot_sizes[snap["id"]] = lun["assigned_size"]
        lun["snapshot_num"] += 1
        return snap

    def _op_create_iscsi_lun_snapshot(self, body: List[Dict[str, Any]]) -> Any:
        return [self._task("create-iscsi-lun-snapshot", self._create_snapshot(d)) for d in body]

    def _op_delete_iscsi_lun_snapshot(self, body: Dict[str, Any]) -> Any:
        snap = self._one(self.snapshots, body["where"], "snapshot")
        del self.snapshots[snap["id"]]
        self.luns[snap["iscsi_lun"]["id"]]["snapshot_num"] -= 1
        return [self._task("delete-iscsi-lun-snapshot", {"id": snap["id"]})]
