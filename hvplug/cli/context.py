"""What every command shares: the host, the registry, input and output."""

import json

from hvplug import exception
from hvplug.utils import inputs
from hvplug.utils.masking import mask_dict, redact


class Context:
    """Built once per command; opens libvirt only when a command needs it."""

    def __init__(self, args):
        self.args = args
        self._host = None
        self._registry = None
        self.secrets: list[str] = []

    @property
    def host(self):
        if self._host is None:
            from hvplug.virt.host import Host
            self._host = Host(self.args.connect)
        return self._host

    @property
    def registry(self):
        if self._registry is None:
            from hvplug.virt.volume.registry import VolumeDriverRegistry
            self._registry = VolumeDriverRegistry(self.host)
        return self._registry

    def close(self) -> None:
        if self._host is not None:
            self._host.close()

    def read_connection_info(self, path: str) -> dict:
        """Parse ``--connection-info`` (a file, or ``-`` for stdin), strictly:
        UTF-8 JSON of bounded size and depth (:mod:`hvplug.utils.inputs`)."""
        raw = inputs.read_bytes(path, "--connection-info")
        info = inputs.json_document(raw, "stdin" if path == "-" else inputs.shown(path),
                                    error=exception.InvalidConnectionInfo)
        self.secrets.extend(_passwords(info))
        return info

    def redact(self, text: str) -> str:
        """Free text hvplug did not write, with any password read so far masked."""
        return redact(text, self.secrets)

    def output(self, payload, text: str, reveal: bool = False) -> None:
        """``payload`` as JSON with --json, else ``text``.

        JSON has its secret-looking keys masked, unless ``reveal``: a command
        whose job is to hand out credentials (a connection_info for the next
        command in a pipe, ``show --show-secrets``).  ``text`` is built by the
        command from fields that hold no secret, or that it reveals on purpose.
        """
        if self.args.json:
            print(json.dumps(payload if reveal else mask_dict(payload), indent=2))
        else:
            print(inputs.for_terminal(text, keep_newlines=True))


def _passwords(info) -> list[str]:
    if not isinstance(info, dict) or not isinstance(info.get("data"), dict):
        return []
    data = info["data"]
    return [v for k, v in data.items() if "password" in k and isinstance(v, str) and v]
