"""Install a stand-in for the get-pip script that ansible-test downloads.

ansible-test bootstraps pip in its sanity/import virtualenvs with a get-pip script fetched
from a host this machine cannot reach; it uses ~/.ansible/test/cache/get_pip_<ver>.py when
that file exists. The stand-in bootstraps pip from the standard library (ensurepip) and then
installs the requested packages with this machine's pip settings.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

STANDIN = '''"""get-pip stand-in written by smartx.zbs scripts/get_pip_standin.py."""
import os
import subprocess
import sys

# ensurepip sets PIP_CONFIG_FILE=/dev/null for itself only: run it in a child process so
# the pip install below keeps this machine's pip configuration.
subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade"], check=True, stdout=subprocess.DEVNULL)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.run([sys.executable, "-m", "pip", "install", *args], check=False).returncode)
'''


def pip_versions() -> set[str]:
    """The pip versions ansible-test asks for, read from the installed ansible-test."""
    import ansible_test  # only available inside the project venv

    src = Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
    return set(re.findall(r"pip='([0-9.]+)'", src.read_text()))


def main() -> int:
    cache = Path(os.path.expanduser("~/.ansible/test/cache"))
    cache.mkdir(parents=True, exist_ok=True)
    for version in sorted(pip_versions()):
        path = cache / f"get_pip_{version.replace('.', '_')}.py"
        if not path.exists() or path.read_text() != STANDIN:
            path.write_text(STANDIN)
    return 0


if __name__ == "__main__":
    sys.exit(main() if "--install" in sys.argv else 2)
