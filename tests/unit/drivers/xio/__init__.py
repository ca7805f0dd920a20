"""The simulated ISE (tools/ise_sim) run in-process over real HTTP for the
driver's tests: a primary controller on 127.0.0.1 and a secondary on
127.0.0.2, both on the same port, as a real array's two controllers."""

import json
import socket
import sys
import urllib.request
from base64 import b64encode
from pathlib import Path

from hvplug.conf import CONF

TOOLS = Path(__file__).resolve().parents[4] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from ise_sim.server import Simulator
from ise_sim.state import Array

LOGIN, PASSWORD = "admin", "sim-Pa55w0rd"
HOST_IQN = "iqn.1993-08.org.example:01:xio-unit"
WWPNS = ["21:00:00:24:ff:3a:1b:2c", "21000024ff3a1b2d"]


def _free_port() -> int:
    """A port free on both 127.0.0.1 and 127.0.0.2."""
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.2", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free on 127.0.0.1 and 127.0.0.2")


class SimulatedISE:
    """Start with ``start()``; ``admin`` flips the simulator's fault switches."""

    def __init__(self, state_dir: Path, exporter_factory=None, delay: float = 0.05):
        self.array = Array(str(state_dir), delay=delay, exporter_factory=exporter_factory,
                           pools=2, pool_size_gb=100)
        self.port = _free_port()
        self.sim = Simulator(self.array, LOGIN, PASSWORD, ("127.0.0.1", self.port),
                             secondary=("127.0.0.2", self.port))

    def start(self) -> "SimulatedISE":
        self.sim.start()
        return self

    def stop(self) -> None:
        self.sim.stop()

    def admin(self, path: str, **params) -> dict:
        """``/_sim/<path>``: GET without params, POST (JSON) with them."""
        data = json.dumps(params).encode() if params else None
        request = urllib.request.Request(
            f"http://127.0.0.2:{self.port}/_sim/{path}", data=data,
            headers={"Authorization": "Basic "
                     + b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()})
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - http only
            return json.loads(resp.read() or b"{}")

    def fault(self, **switches) -> dict:
        return self.admin("faults", **switches)

    def state(self) -> dict:
        return self.admin("state")

    def volume_names(self) -> list[str]:
        return sorted(v["name"] for v in self.state()["volumes"].values())


def write_config(path: Path, port: int, driver: str = "iscsi.XIOISCSIDriver",
                 **extra) -> Path:
    """A configuration file with backend ``ise1`` pointing at the simulator."""
    options = {"volume_driver": f"hvplug.drivers.xio.{driver}", "san_ip": "127.0.0.1",
               "san_api_port": port, "san_login": LOGIN, "san_password": PASSWORD,
               "iscsi_ip_address": "127.0.0.1", "ise_retry_interval": 0.01,
               "ise_connection_retries": 2, "ise_completion_retries": 100,
               "ise_request_timeout": 2, **extra}
    body = "\n".join(f"{k} = {v}" for k, v in options.items() if v is not None)
    path.write_text(f"[DEFAULT]\nenabled_backends = ise1\n\n[ise1]\n{body}\n")
    return path


def load_config(path: Path) -> None:
    CONF(args=[], project="hvplug", prog="hvplug", default_config_files=[str(path)],
         default_config_dirs=[])
