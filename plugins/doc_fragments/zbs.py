# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The connection options and attributes every smartx.zbs API module shares, documented once."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  host:
    description:
      - The ZBS management API (CloudTower) address, as C(host), C(host:port) or C(https://host:port).
      - If not set, the value of the E(ZBS_HOST) environment variable is used.
    type: str
    required: true
  username:
    description:
      - User name for the management API.
      - If not set, the value of the E(ZBS_USERNAME) environment variable is used.
    type: str
    required: true
  password:
    description:
      - Password for O(username). Never logged nor returned.
      - If not set, the value of the E(ZBS_PASSWORD) environment variable is used.
    type: str
    required: true
  validate_certs:
    description:
      - Verify the API's TLS certificate. Only turn this off for throw-away test clusters;
        prefer O(ca_path) for a cluster with a private CA.
      - If not set, the value of the E(ZBS_VALIDATE_CERTS) environment variable is used.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file with the CA that signed the API's certificate (for example the one C(zbs-lite status) prints).
      - If not set, the value of the E(ZBS_CA_PATH) environment variable is used.
    type: path
  timeout:
    description:
      - Seconds to wait for the answer to each HTTP request, once connected (the read timeout).
      - An API that accepts the connection but does not answer in time fails the task at once; the request is not
        retried, because a hung or overloaded API would only make every retry wait as long again.
      - If not set, the value of the E(ZBS_TIMEOUT) environment variable is used.
    type: float
    default: 30
  connect_timeout:
    description:
      - Seconds to wait for the TCP connection to the API.
      - An address that does not answer in time fails the task at once (not retried). A refused connection is
        retried three times with a short back-off, because nothing was sent yet; so are reads whose connection
        dropped or that got an HTTP 5xx answer. A host name that does not resolve, a TLS failure and every
        HTTP 4xx answer are never retried.
      - If not set, the value of the E(ZBS_CONNECT_TIMEOUT) environment variable is used.
    type: float
    default: 10
  wait_timeout:
    description:
      - Seconds to wait for the asynchronous tasks a change starts on the cluster.
      - A task still running after this fails the module with the task id and what it was doing;
        the task may still finish on the cluster later.
    type: float
    default: 300
requirements:
  - python >= 3.9
  - requests
notes:
  - All API modules belong to the C(smartx.zbs.zbs) action group, so the connection options can be set once with
    C(module_defaults) and C(group/smartx.zbs.zbs).
"""

    ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the cluster.
    support: full
  diff_mode:
    description: Will return C(before) and C(after) of what changed when run with C(--diff).
    support: full
  action_group:
    description: Use C(group/smartx.zbs.zbs) in C(module_defaults) to set the connection options once.
    support: full
    membership:
      - smartx.zbs.zbs
"""
