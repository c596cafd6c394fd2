"""Write single-layer container images of static binaries as one docker-archive tarball.

No registry is reachable from the test cluster, so scripts/k8s-lab.sh builds the images the
manifests name from the binaries scripts/k8s-build.sh made, and imports this tarball into the
lab's containerd (``ctr images import``).

    python3 scripts/k8s_images.py OUT.tar|- NAME:TAG=/PATH:BINARY ...

Each image holds BINARY at /PATH, its entrypoint; a busybox binary also gets a /bin/<applet>
link for each of its applets (the workload image the tests' pods run).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageSpec:
    tag: str
    binary: Path
    path: str  # where the binary lives in the image, e.g. /csi-provisioner

    @classmethod
    def parse(cls, text: str) -> ImageSpec:
        tag, _, rest = text.partition("=")
        path, _, binary = rest.partition(":")
        if not tag or not path.startswith("/") or not binary:
            raise argparse.ArgumentTypeError(f"expected NAME:TAG=/PATH:BINARY, got {text!r}")
        return cls(tag, Path(binary), path)


def _busybox_applets(binary: Path) -> list[str]:
    out = subprocess.run([str(binary), "--list"], capture_output=True, text=True, timeout=30, check=True).stdout
    return sorted({a for a in out.split() if a and "/" not in a})


def _layer(spec: ImageSpec) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = {str(p) for p in Path(spec.path.lstrip("/")).parents if str(p) != "."}
        if spec.binary.name == "busybox":
            dirs.add("bin")
            dirs.add("tmp")
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        data = spec.binary.read_bytes()
        info = tarfile.TarInfo(spec.path.lstrip("/"))
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        if spec.binary.name == "busybox":
            for applet in _busybox_applets(spec.binary):
                link = tarfile.TarInfo(f"bin/{applet}")
                if link.name == spec.path.lstrip("/"):
                    continue
                link.type, link.linkname, link.mode = tarfile.SYMTYPE, spec.path, 0o777
                tar.addfile(link)
    return buf.getvalue()


def write_archive(out: Path, specs: list[ImageSpec]) -> None:
    """Write the archive to ``out``, or stream it to stdout when ``out`` is ``-``."""
    manifest = []
    stream = str(out) == "-"
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") if stream else tarfile.open(out, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for spec in specs:
            layer = _layer(spec)
            digest = hashlib.sha256(layer).hexdigest()
            config = json.dumps(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "config": {
                        "Entrypoint": [spec.path],
                        "Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
                        "WorkingDir": "/",
                    },
                    "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest}"]},
                },
                sort_keys=True,
            ).encode()
            config_name = hashlib.sha256(config).hexdigest() + ".json"
            add(f"{digest}/layer.tar", layer)
            add(config_name, config)
            manifest.append({"Config": config_name, "RepoTags": [spec.tag], "Layers": [f"{digest}/layer.tar"]})
        add("manifest.json", json.dumps(manifest).encode())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("images", nargs="+", type=ImageSpec.parse)
    args = p.parse_args()
    write_archive(args.out, args.images)


if __name__ == "__main__":
    main()
