"""The zbs_csi role's rendered manifests, as a user (or kube-apiserver) would see them.

No Kubernetes API server can run here, so the manifests are validated offline against the
Kubernetes OpenAPI schemas bundled with kubernetes-validate, for two minor versions, and
their security-relevant shape is checked directly.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .helpers import ROOT, PlaybookRunner, recap

PLAYBOOK = ROOT / "playbooks" / "install_csi.yml"
K8S_VERSIONS = ["1.30", "1.34"]
PASSWORD = "Pw4ZbsTestOnly9x"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBtestcertificatebody0123456789\n-----END CERTIFICATE-----\n"
CONTROLLER_SIDECARS = {"csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter", "liveness-probe"}
NODE_SIDECARS = {"node-driver-registrar", "liveness-probe"}


def _render(runner: PlaybookRunner, out: Path, topology: str, **extra: Any) -> str:
    variables = {
        "zbs_csi_render_only": True,
        "zbs_csi_render_dir": str(out),
        "zbs_csi_topology": topology,
        "zbs_csi_zbs_host": "https://zbs.example.test:443",
        "zbs_csi_zbs_username": "csi",
        "zbs_csi_zbs_password": PASSWORD,
        "zbs_csi_zbs_ca_cert": CA_PEM,
        "zbs_csi_iscsi_portal": "192.0.2.10:3260",
        **extra,
    }
    return runner.run(PLAYBOOK, variables).stdout


def _load(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted(out.glob("*.yaml"))}


def _objects(docs: dict[str, list[dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [d for items in docs.values() for d in items if d["kind"] == kind]


@pytest.fixture(scope="module", params=["separated", "converged"])
def rendered(request: pytest.FixtureRequest, playbook_runner: PlaybookRunner, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp(f"manifests-{request.param}")
    # converged also exercises the nsenter host-exec strategy
    extra = {"zbs_csi_install_snapshot_controller": True}
    if request.param == "converged":
        extra["zbs_csi_host_exec"] = "nsenter"
    first = _render(playbook_runner, out, request.param, **extra)
    second = _render(playbook_runner, out, request.param, **extra)
    return request.param, out, first, second


def test_manifests_validate_against_kubernetes_schemas(rendered) -> None:
    _, out, _, _ = rendered
    docs = _load(out)
    checked = 0
    for items in docs.values():
        for doc in items:
            if doc["apiVersion"].startswith("snapshot.storage.k8s.io/"):
                continue  # a CRD, not in the core schemas: checked in test_snapshot_class
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)
                checked += 1
    assert checked >= 20 * len(K8S_VERSIONS)


def test_second_render_changes_nothing(rendered) -> None:
    _, _, first, second = rendered
    assert recap(first)["changed"] > 0
    assert recap(second)["changed"] == 0


def test_controller_runs_the_sidecar_set_with_leader_election(rendered) -> None:
    _, out, _, _ = rendered
    (deploy,) = [d for d in _objects(_load(out), "Deployment") if d["metadata"]["name"] == "zbs-csi-controller"]
    assert deploy["spec"]["replicas"] == 2
    containers = {c["name"]: c for c in deploy["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"zbs-csi"} | CONTROLLER_SIDECARS
    for name in CONTROLLER_SIDECARS - {"liveness-probe"}:
        assert "--leader-election=true" in containers[name]["args"], name
    assert "--extra-create-metadata" in containers["csi-provisioner"]["args"]
    assert "--mode=controller" in containers["zbs-csi"]["args"]
    for c in containers.values():
        assert not c.get("securityContext", {}).get("privileged", False), c["name"]
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], c["name"]


def test_node_pod_has_exactly_the_privileges_it_needs(rendered) -> None:
    topology, out, _, _ = rendered
    (ds,) = _objects(_load(out), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"zbs-csi"} | NODE_SIDECARS
    plugin = containers["zbs-csi"]
    assert plugin["securityContext"]["privileged"] is True
    assert pod["hostNetwork"] is True
    # only the nsenter host-exec strategy (used for converged here) needs the host's PID namespace
    assert pod.get("hostPID", False) is (topology == "converged")
    for name in NODE_SIDECARS:
        assert not containers[name]["securityContext"].get("privileged", False)
    mounts = {m["mountPath"]: m for m in plugin["volumeMounts"]}
    assert mounts["/var/lib/kubelet"]["mountPropagation"] == "Bidirectional"
    assert {"/dev", "/sys", "/host", "/var/lib/zbs-csi", "/csi"} <= set(mounts)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["socket-dir"]["hostPath"]["path"] == "/var/lib/kubelet/plugins/zbs.csi.smartx.com"
    assert "--mode=node" in plugin["args"]
    env = {e["name"]: e for e in plugin["env"]}
    assert env["ZBS_ISCSI_PORTAL"]["valueFrom"]["secretKeyRef"]["key"] == "iscsi-portal"
    (ns,) = _objects(_load(out), "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_no_secret_value_outside_the_secret(rendered) -> None:
    _, out, _, _ = rendered
    for path in out.glob("*.yaml"):
        text = path.read_text()
        if path.name == "01-secret.yaml":
            assert PASSWORD in text and "MIIBtestcertificatebody" in text
            assert path.stat().st_mode & 0o077 == 0, "the Secret manifest must not be readable by others"
        else:
            assert PASSWORD not in text, path.name
            assert "MIIBtestcertificatebody" not in text, path.name
    (secret,) = _objects(_load(out), "Secret")
    assert secret["stringData"]["password"] == PASSWORD


def test_playbook_output_never_shows_the_password(rendered) -> None:
    _, _, first, second = rendered
    assert PASSWORD not in first and PASSWORD not in second


def test_rbac_is_per_sidecar_and_least_privilege(rendered) -> None:
    _, out, _, _ = rendered
    docs = _load(out)
    roles = {r["metadata"]["name"]: r for r in _objects(docs, "ClusterRole")}
    assert {"zbs-csi-provisioner", "zbs-csi-attacher", "zbs-csi-resizer", "zbs-csi-snapshotter"} <= set(roles)
    for role in roles.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], role["metadata"]["name"]
    attacher_pv = [r for r in roles["zbs-csi-attacher"]["rules"] if "persistentvolumes" in r["resources"]]
    assert "create" not in attacher_pv[0]["verbs"] and "delete" not in attacher_pv[0]["verbs"]
    secrets_rules = [r for role in roles.values() for r in role["rules"] if "secrets" in r["resources"]]
    assert secrets_rules == []


def test_csidriver_and_classes(rendered) -> None:
    _, out, _, _ = rendered
    docs = _load(out)
    (driver,) = _objects(docs, "CSIDriver")
    assert driver["metadata"]["name"] == "zbs.csi.smartx.com"
    assert driver["spec"]["attachRequired"] is True
    assert driver["spec"]["fsGroupPolicy"] == "File"
    (sc,) = _objects(docs, "StorageClass")
    assert sc["provisioner"] == "zbs.csi.smartx.com"
    assert sc["parameters"]["csi.storage.k8s.io/fstype"] == "ext4"
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    (vsc,) = _objects(docs, "VolumeSnapshotClass")
    assert vsc["apiVersion"] == "snapshot.storage.k8s.io/v1"
    assert vsc["driver"] == "zbs.csi.smartx.com" and vsc["deletionPolicy"] in {"Delete", "Retain"}


def test_unknown_storage_class_parameter_is_refused(playbook_runner: PlaybookRunner, tmp_path: Path) -> None:
    classes = [{"name": "fast", "parameters": {"replication.n": "3", "replicaton": "2"}}]
    proc = playbook_runner.run(
        PLAYBOOK,
        {"zbs_csi_render_only": True, "zbs_csi_render_dir": str(tmp_path), "zbs_csi_storage_classes": classes},
        check=False,
    )
    assert proc.returncode != 0
    assert "replicaton" in proc.stdout
    assert not list(tmp_path.glob("*.yaml"))


def test_separated_topology_needs_the_access_portal(playbook_runner: PlaybookRunner, tmp_path: Path) -> None:
    proc = playbook_runner.run(
        PLAYBOOK,
        {"zbs_csi_render_only": True, "zbs_csi_render_dir": str(tmp_path), "zbs_csi_topology": "separated"},
        check=False,
    )
    assert proc.returncode != 0
    assert "zbs_csi_iscsi_portal" in proc.stdout
    assert not list(tmp_path.glob("*.yaml"))


def test_disabling_the_snapshot_controller_removes_its_manifest(
    rendered, playbook_runner: PlaybookRunner, tmp_path: Path
) -> None:
    topology, out, _, _ = rendered
    shutil.copytree(out, tmp_path / "m")
    assert (tmp_path / "m" / "30-snapshot-controller.yaml").exists()
    _render(playbook_runner, tmp_path / "m", topology, zbs_csi_install_snapshot_controller=False)
    assert not (tmp_path / "m" / "30-snapshot-controller.yaml").exists()
    assert (tmp_path / "m" / "11-node.yaml").exists()


def test_chap_per_storage_class(playbook_runner: PlaybookRunner, tmp_path: Path) -> None:
    """A class's CHAP Secret is its provisioner, controller-publish and node-stage secret; the
    controller may read exactly those Secrets; zbs_csi_chap needs a Secret on every class."""
    classes = [
        {"name": "plain"},
        {"name": "gold", "chap_secret_name": "gold-chap"},
        {"name": "platinum", "chap_secret_name": "plat-chap", "chap_secret_namespace": "tenant-a"},
    ]
    out = tmp_path / "chap"
    _render(playbook_runner, out, "converged", zbs_csi_storage_classes=classes)
    docs = _load(out)
    scs = {sc["metadata"]["name"]: sc["parameters"] for sc in _objects(docs, "StorageClass")}
    assert not any(k.endswith("-secret-name") for k in scs["plain"])
    for name, secret, ns in (("gold", "gold-chap", "smartx-zbs-csi"), ("platinum", "plat-chap", "tenant-a")):
        for use in ("provisioner", "controller-publish", "node-stage"):
            assert scs[name][f"csi.storage.k8s.io/{use}-secret-name"] == secret
            assert scs[name][f"csi.storage.k8s.io/{use}-secret-namespace"] == ns
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in _objects(docs, "Role")}
    for ns, secret in (("smartx-zbs-csi", "gold-chap"), ("tenant-a", "plat-chap")):
        (rule,) = roles[(ns, "zbs-csi-chap-secrets")]["rules"]
        assert rule == {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get"]}
    bindings = {(b["metadata"]["namespace"], b["metadata"]["name"]): b for b in _objects(docs, "RoleBinding")}
    assert bindings[("tenant-a", "zbs-csi-chap-secrets")]["subjects"][0]["name"] == "zbs-csi-controller"
    for doc in [d for items in docs.values() for d in items]:
        for version in K8S_VERSIONS:
            if not doc["apiVersion"].startswith("snapshot.storage.k8s.io/"):
                kubernetes_validate.validate(doc, version, strict=True)

    refused = tmp_path / "refused"
    proc = playbook_runner.run(
        PLAYBOOK,
        {
            "zbs_csi_render_only": True,
            "zbs_csi_render_dir": str(refused),
            "zbs_csi_chap": True,
            "zbs_csi_storage_classes": classes,
        },
        check=False,
    )
    assert (
        proc.returncode != 0 and "every StorageClass needs chap_secret_name" in proc.stdout and "plain" in proc.stdout
    )
    assert not list(refused.glob("*.yaml"))
    _render(playbook_runner, out, "converged", zbs_csi_chap=True, zbs_csi_storage_classes=classes[1:])
    for workload in _objects(_load(out), "Deployment") + _objects(_load(out), "DaemonSet"):
        driver = next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == "zbs-csi")
        assert {"name": "ZBS_CSI_CHAP", "value": "true"} in driver["env"]


def _driver_env(docs: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, dict[str, Any]]:
    (workload,) = [w for w in _objects(docs, kind) if w["metadata"]["name"].startswith("zbs-csi-")]
    driver = next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == "zbs-csi")
    return {e["name"]: e for e in driver["env"]}


def test_kubernetes_cluster_id_is_made_once_and_kept(playbook_runner: PlaybookRunner, tmp_path: Path) -> None:
    out = tmp_path / "m"
    _render(playbook_runner, out, "converged")
    kept = (out / "kubernetes-cluster-id").read_text().strip()
    assert kept.startswith("k8s-") and len(kept) == 16
    docs = _load(out)
    (cm,) = [c for c in _objects(docs, "ConfigMap") if c["metadata"]["name"] == "zbs-csi-identity"]
    assert cm["data"]["kubernetes-cluster-id"] == kept
    env = _driver_env(docs, "Deployment")
    assert env["ZBS_CSI_KUBERNETES_CLUSTER_ID"]["valueFrom"]["configMapKeyRef"] == {
        "name": "zbs-csi-identity",
        "key": "kubernetes-cluster-id",
    }
    assert env["ZBS_CSI_ADOPT_LEGACY"]["value"] == "false"
    # A re-run keeps it (and changes nothing); naming the same id is fine; another one is refused.
    assert recap(_render(playbook_runner, out, "converged"))["changed"] == 0
    assert recap(_render(playbook_runner, out, "converged", zbs_csi_kubernetes_cluster_id=kept))["changed"] == 0
    proc = playbook_runner.run(
        PLAYBOOK,
        {"zbs_csi_render_only": True, "zbs_csi_render_dir": str(out), "zbs_csi_kubernetes_cluster_id": "prod-east"},
        check=False,
    )
    assert proc.returncode != 0 and "never changes" in proc.stdout and kept in proc.stdout
    assert (out / "kubernetes-cluster-id").read_text().strip() == kept
    # A new render directory takes the given id; a malformed one is refused.
    fresh = tmp_path / "fresh"
    _render(playbook_runner, fresh, "converged", zbs_csi_kubernetes_cluster_id="prod-east")
    assert (fresh / "kubernetes-cluster-id").read_text().strip() == "prod-east"
    bad = playbook_runner.run(
        PLAYBOOK,
        {
            "zbs_csi_render_only": True,
            "zbs_csi_render_dir": str(tmp_path / "bad"),
            "zbs_csi_kubernetes_cluster_id": "Prod_East",
        },
        check=False,
    )
    assert bad.returncode != 0 and "lower-case" in bad.stdout


def test_smartx_names_and_session_tuning(playbook_runner: PlaybookRunner, tmp_path: Path) -> None:
    """SmartX's StorageClass (its parameter names, ext3) renders; the iSCSI settings reach the node plugin."""
    classes = [{"name": "smartx", "fstype": "ext3", "parameters": {"replicaFactor": "2", "thinProvision": "false"}}]
    out = tmp_path / "m"
    _render(
        playbook_runner,
        out,
        "converged",
        zbs_csi_storage_classes=classes,
        zbs_csi_iscsi_queue_depth=64,
        zbs_csi_iscsi_cmds_max=256,
        zbs_csi_iscsi_replacement_timeout=15,
    )
    docs = _load(out)
    (sc,) = _objects(docs, "StorageClass")
    assert sc["parameters"] == {
        "csi.storage.k8s.io/fstype": "ext3",
        "replicaFactor": "2",
        "thinProvision": "false",
    }
    env = _driver_env(docs, "DaemonSet")
    assert {k: env[f"ZBS_CSI_ISCSI_{k}"]["value"] for k in ("QUEUE_DEPTH", "CMDS_MAX", "REPLACEMENT_TIMEOUT")} == {
        "QUEUE_DEPTH": "64",
        "CMDS_MAX": "256",
        "REPLACEMENT_TIMEOUT": "15",
    }


def test_manifests_go_to_the_home_directory_not_into_the_collection(
    playbook_runner: PlaybookRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collection's own playbook must not write into the installed collection by default."""
    monkeypatch.setenv("HOME", str(tmp_path))
    inside = ROOT / "playbooks" / "zbs-csi-manifests"
    assert not inside.exists()
    variables = {
        "zbs_csi_render_only": True,
        "zbs_csi_zbs_host": "https://zbs.example.test:443",
        "zbs_csi_zbs_username": "csi",
        "zbs_csi_zbs_password": PASSWORD,
        "zbs_csi_zbs_ca_cert": CA_PEM,
        "zbs_csi_iscsi_portal": "192.0.2.10:3260",
    }
    playbook_runner.run(PLAYBOOK, variables)
    assert not inside.exists()
    assert sorted(p.name for p in (tmp_path / "zbs-csi-manifests").glob("*.yaml"))


def test_the_role_and_the_driver_default_to_the_same_connector() -> None:
    from zbs_csi.config import Config

    defaults = yaml.safe_load((ROOT / "roles" / "zbs_csi" / "defaults" / "main.yml").read_text())
    assert defaults["zbs_csi_connector"] == Config().connector == "kernel"
