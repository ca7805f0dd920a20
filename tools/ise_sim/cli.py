"""Command line of the ISE simulator (``tools/ise-simulator``)."""

import argparse
import ipaddress
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from ise_sim.server import Simulator
from ise_sim.state import Array

LOG = logging.getLogger("ise_sim")
PASSWORD_ENV = "ISE_SIM_PASSWORD"


def address(text: str) -> tuple[str, int]:
    """HOST:PORT on a loopback address: the simulator is not for the network."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise argparse.ArgumentTypeError(f"{host} is not a loopback address")
    return host, int(port)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="ise-simulator", description="A simulated X-IO ISE array (REST API, "
        "sparse-file volumes, iSCSI through tgtd). See doc/ise-simulator.md.")
    ap.add_argument("--listen", type=address, default=("127.0.0.1", 8080),
                    help="primary controller (rank 1), HOST:PORT (default 127.0.0.1:8080)")
    ap.add_argument("--secondary-listen", type=address,
                    help="secondary controller (rank 0), HOST:PORT; give it the same "
                    "port on another address (e.g. 127.0.0.2) as a real ISE has")
    ap.add_argument("--state-dir", required=True, help="where volumes and state.json live")
    ap.add_argument("--login", default="admin", help="HTTP Basic user (default admin)")
    ap.add_argument("--password", help="HTTP Basic password (prefer --password-file or "
                    f"${PASSWORD_ENV}: argv is readable by every local user)")
    ap.add_argument("--password-file", help="file holding the HTTP Basic password")
    ap.add_argument("--iscsi-ip", default="127.0.0.1",
                    help="iSCSI portal address reported on the ioports (tgtd's)")
    ap.add_argument("--no-iscsi", action="store_true",
                    help="no data path: allocations are kept but nothing is exported")
    ap.add_argument("--tgtd-socket", default="/var/run/tgtd/socket.0")
    ap.add_argument("--delay", type=float, default=0.2,
                    help="seconds an asynchronous array operation takes (default 0.2)")
    ap.add_argument("--pools", type=int, default=1, help="pools of a new array (default 1)")
    ap.add_argument("--pool-size", type=int, default=1024,
                    help="raw GB per pool of a new array (default 1024)")
    ap.add_argument("--chap-user", help="CHAP-in user name (default derived from the array id)")
    ap.add_argument("--chap-password-file", help="file holding the CHAP-in secret")
    ap.add_argument("--no-chap", action="store_true", help="CHAP-in disabled")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def read_password(args, state_dir: Path) -> str:
    """--password-file, $ISE_SIM_PASSWORD, --password, else one generated once
    and kept in <state-dir>/api-password (0600)."""
    if args.password_file:
        return Path(args.password_file).read_text().strip()
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if args.password:
        return args.password
    stored = state_dir / "api-password"
    if not stored.exists():
        fd = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(12) + "\n")
        LOG.warning("no password given: generated one in %s", stored)
    return stored.read_text().strip()


def build(args) -> Simulator:
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    exporter = None
    if not args.no_iscsi:
        from ise_sim.iscsi import TgtdExporter

        def exporter(iqn):
            return TgtdExporter(iqn, args.tgtd_socket)
    array = Array(str(state_dir), delay=args.delay, exporter_factory=exporter,
                  pools=args.pools, pool_size_gb=args.pool_size)
    if args.chap_user or args.chap_password_file or args.no_chap:
        secret = Path(args.chap_password_file).read_text().strip() \
            if args.chap_password_file else None
        array.set_chap(not args.no_chap, args.chap_user, secret)
    return Simulator(array, args.login, read_password(args, state_dir), args.listen,
                     args.secondary_listen, args.iscsi_ip)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sim = build(args)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sim.start()
    for (host, port), rank in zip(sim.addresses, ("primary", "secondary"), strict=False):
        LOG.info("ISE %s controller on http://%s:%s (array %s, target %s)",
                 rank, host, port, sim.array.gid, sim.array.iqn)
    print(f"READY {' '.join(f'{h}:{p}' for h, p in sim.addresses)}", flush=True)
    stop.wait()
    LOG.info("stopping: removing tgtd exports")
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
