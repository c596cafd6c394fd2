"""The zbs-lite command as users and scripts/lib.sh run it: serve --daemon, status, env, chunk, stop."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import requests

from zbs_lite.testing import free_port, random_loopback_base


def zbs_lite(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [sys.executable, "-m", "zbs_lite", *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert res.returncode == 0, f"zbs-lite {args}: rc {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def parse_env(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        assert line.startswith("export ")
        key, _, value = line[len("export ") :].partition("=")
        out[key] = value.strip("'")
    return out


def test_daemon_status_env_chunk_stop(tmp_path: Path) -> None:
    data = tmp_path / "d"
    base = random_loopback_base()
    serve = zbs_lite(
        "serve", "--data-dir", str(data), "--daemon", "--api-port", "0", "--http-port", "0",
        "--vip", "127.0.0.1:0", "--chunk-ip-base", base, "--chunk-port", str(free_port(base)),
        "--pool", "dir", "--chunks", "2",
    )  # fmt: skip
    try:
        assert "zbs-lite: running" in serve.stdout and "CA:" in serve.stdout
        st = json.loads(zbs_lite("status", "--data-dir", str(data), "--json").stdout)
        assert st["running"] and st["clone_mode"] in ("reflink", "copy") and st["pool"] == "dir"
        assert Path(st["ca_path"]).read_text().startswith("-----BEGIN CERTIFICATE-----")

        env = parse_env(zbs_lite("env", "--data-dir", str(data)).stdout)
        assert set(env) >= {
            "ZBS_HOST",
            "ZBS_USERNAME",
            "ZBS_PASSWORD",
            "ZBS_CA_PATH",
            "ZBS_ISCSI_PORTAL",
            "ZBS_CLUSTER",
        }
        assert env["ZBS_HOST"] == st["api_url"] and env["ZBS_ISCSI_PORTAL"] == st["vip"]
        assert env["ZBS_ISCSI_DATA_PORTALS"].split(",") == [c["portal"] for c in st["chunks"]]
        assert len(set(env["ZBS_ISCSI_DATA_PORTALS"].split(","))) == 2, "one portal per chunk server"
        pw_file = Path(st["password_file"])
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
        assert env["ZBS_PASSWORD"] == pw_file.read_text().strip()
        assert env["ZBS_PASSWORD"] not in json.dumps(st), "the status must not carry the password"

        login = requests.post(
            f"{env['ZBS_HOST']}/v2/api/login",
            json={"username": env["ZBS_USERNAME"], "password": env["ZBS_PASSWORD"]},
            verify=env["ZBS_CA_PATH"],
            timeout=30,
        )
        assert login.status_code == 200 and login.json()["data"]["token"]
        plain = requests.post(f"{st['http_url']}/v2/api/get-clusters", json={}, timeout=30)
        assert plain.status_code == 401

        again = zbs_lite("serve", "--data-dir", str(data), "--api-port", "0", check=False)
        assert again.returncode != 0 and "already serves" in (again.stdout + again.stderr)

        assert st["data_plane"], st.get("data_plane_error")
        out = zbs_lite("chunk", "stop", "2", "--data-dir", str(data)).stdout
        assert "down" in out
        chunks = json.loads(zbs_lite("status", "--data-dir", str(data), "--json").stdout)["chunks"]
        assert [c["up"] for c in chunks] == [True, False]
        zbs_lite("chunk", "start", "2", "--data-dir", str(data))
        chunks = json.loads(zbs_lite("status", "--data-dir", str(data), "--json").stdout)["chunks"]
        assert [c["up"] for c in chunks] == [True, True]
        bad = zbs_lite("chunk", "stop", "9", "--data-dir", str(data), check=False)
        assert bad.returncode == 1
    finally:
        zbs_lite("stop", "--data-dir", str(data))
    down = zbs_lite("status", "--data-dir", str(data), check=False)
    assert down.returncode == 3 and "not running" in down.stdout
    assert zbs_lite("env", "--data-dir", str(data), check=False).returncode == 1
    assert "not running" in zbs_lite("stop", "--data-dir", str(data)).stdout


def test_config_file_and_password_file(tmp_path: Path) -> None:
    data = tmp_path / "d"
    pw = tmp_path / "pw"
    pw.write_text("s3cret-Passw0rd\n")
    os.chmod(pw, 0o600)
    base = random_loopback_base()
    cfg = tmp_path / "zbs-lite.toml"
    cfg.write_text(
        f'api-port = 0\nvip = "127.0.0.1:0"\nchunk_ip_base = "{base}"\nchunk_port = {free_port(base)}\n'
        f'pool = "dir"\nusername = "ops"\npassword_file = "{pw}"\ncluster_name = "lab-1"\ntask_delay = 0.01\n'
    )
    zbs_lite("serve", "--data-dir", str(data), "--daemon", "--config", str(cfg))
    try:
        env = parse_env(zbs_lite("env", "--data-dir", str(data)).stdout)
        assert env["ZBS_USERNAME"] == "ops" and env["ZBS_PASSWORD"] == "s3cret-Passw0rd"
        assert env["ZBS_CLUSTER"] == "lab-1"
        assert not (data / "admin.password").exists()
    finally:
        zbs_lite("stop", "--data-dir", str(data))


def test_bad_flags_fail_cleanly(tmp_path: Path) -> None:
    res = zbs_lite("serve", "--data-dir", str(tmp_path), "--vip", "nonsense", check=False)
    assert res.returncode == 2 and "HOST:PORT" in res.stderr and "Traceback" not in res.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("bogus = 1\n")
    res = zbs_lite("serve", "--data-dir", str(tmp_path), "--config", str(cfg), check=False)
    assert res.returncode == 2 and "unknown option" in res.stderr


def test_a_port_in_use_fails_the_start_and_releases_everything(tmp_path: Path) -> None:
    data = tmp_path / "d"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        base = random_loopback_base()
        res = zbs_lite(
            "serve", "--data-dir", str(data), "--daemon", "--api-port", str(port), "--vip", "127.0.0.1:0",
            "--chunk-ip-base", base, "--chunk-port", str(free_port(base)), "--pool", "dir", check=False,
        )  # fmt: skip
    assert res.returncode == 1 and "Address already in use" in res.stderr
    assert zbs_lite("status", "--data-dir", str(data), check=False).returncode == 3
    assert not (data / "run" / "state.json").exists()
