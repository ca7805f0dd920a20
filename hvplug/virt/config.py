"""libvirt XML objects, declared once and used both to parse and to format.

A config class names its root element and lists its properties, each bound
to a path below that root::

    class LibvirtConfigSecret(LibvirtConfigObject):
        root_name = "secret"
        private = XMLProperty("./@private", kind="yesno", default=False)
        uuid = XMLProperty("./uuid")

Paths are a small subset of XPath: ``./a/b/@attr`` is an attribute,
``./a/b`` an element's text and, with ``kind="flag"``, an element whose
presence alone means True.  Formatting creates only the elements that a set
value needs, in declaration order, so an empty ``<driver/>`` or ``<iotune/>``
never appears.  Parsing reads the same paths and ignores everything else
(``<alias>``, ``<address>``, ``index=``...), which is why the XML libvirt
writes back for a live domain parses cleanly, and why parse -> format ->
parse gives back what went in.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self

from lxml import etree

from hvplug import connection_schema, exception
from hvplug.connection_schema import IOTUNE_KEYS

PathSpec = str | Callable[[Any], str | None]

_DECODERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "yesno": lambda text: text == "yes",
}
_ENCODERS: dict[str, Callable[[Any], str]] = {
    "str": str,
    "int": str,
    "yesno": lambda value: "yes" if value else "no",
}
_KINDS = (*_DECODERS, "flag")


def _split(path: str) -> tuple[list[str], str | None]:
    """``./a/b/@c`` -> (["a", "b"], "c"); ``./a/b`` -> (["a", "b"], None)."""
    steps = path.removeprefix("./").split("/")
    if steps[-1].startswith("@"):
        return steps[:-1], steps[-1][1:]
    return steps, None


def _find(root: etree._Element, steps: list[str]) -> etree._Element | None:
    return root.find("/".join(steps)) if steps else root


def _ensure(root: etree._Element, steps: list[str]) -> etree._Element:
    """The element at ``steps`` below ``root``, creating what is missing."""
    node = root
    for tag in steps:
        child = node.find(tag)
        node = child if child is not None else etree.SubElement(node, tag)
    return node


class XMLProperty:
    """One value of a config object, bound to a path in its XML.

    ``kind`` is ``str``, ``int``, ``yesno`` (a bool written 'yes'/'no') or
    ``flag`` (a bool written as an empty element, omitted when False).
    ``path`` may instead be a function of the object that returns the path,
    or None where the value has no place (a network disk has no
    ``source_path``); such a property must be declared after the properties
    the function reads, because parsing goes in declaration order.
    ``legacy_paths`` are tried in turn when parsing finds nothing at
    ``path``; formatting always writes ``path``.
    """

    def __init__(self, path: PathSpec, kind: str = "str", default: Any = None,
                 legacy_paths: Iterable[str] = ()) -> None:
        if kind not in _KINDS:
            raise ValueError(f"unknown XMLProperty kind {kind!r}")
        self.path = path
        self.kind = kind
        self.default = default
        self.legacy_paths = tuple(legacy_paths)
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.setdefault(self.name, self.make_default())

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value

    def make_default(self) -> Any:
        return self.default

    def resolve(self, obj: Any) -> str | None:
        """The path for ``obj``, or None when the value has no place."""
        return self.path(obj) if callable(self.path) else self.path

    def read(self, obj: Any, root: etree._Element) -> Any:
        primary = self.resolve(obj)
        if primary is None:
            return self.make_default()
        for path in (primary, *self.legacy_paths):
            value = self._read_one(root, path)
            if value is not None:
                return value
        return self.make_default()

    def _read_one(self, root: etree._Element, path: str) -> Any:
        steps, attr = _split(path)
        node = _find(root, steps)
        if node is None:
            return None
        if self.kind == "flag":
            return True
        text = node.get(attr) if attr else (node.text or "")
        return None if text is None else self._decode(root, path, text)

    def _decode(self, root: etree._Element, path: str, text: str) -> Any:
        try:
            return _DECODERS[self.kind](text.strip() if self.kind == "int" else text)
        except ValueError:
            raise exception.InvalidInput(
                reason=f"<{root.tag}> {path} is {text!r}, expected {self.kind}"
            ) from None

    def write(self, obj: Any, root: etree._Element) -> None:
        path = self.resolve(obj)
        value = self.__get__(obj)
        if path is None or value is None or (self.kind == "flag" and not value):
            return
        steps, attr = _split(path)
        node = _ensure(root, steps)
        if self.kind == "flag":
            return
        text = _ENCODERS[self.kind](value)
        if attr:
            node.set(attr, text)
        else:
            node.text = text


def _as_attr_text(value: Any) -> str | None:
    return None if value is None else str(value)


class XMLTupleList(XMLProperty):
    """Repeated elements at ``path``, each one a tuple of its ``attrs``.

    ``clean`` turns a caller's tuple into the attribute strings to write
    (None leaves an attribute out); by default each item becomes ``str``.
    """

    path: str  # one fixed path, never a function of the object

    def __init__(self, path: str, attrs: tuple[str, ...],
                 clean: Callable[[tuple], tuple] | None = None) -> None:
        super().__init__(path)
        self.attrs = attrs
        self.clean = clean or (lambda item: tuple(map(_as_attr_text, item)))

    def make_default(self) -> list:
        return []

    def read(self, obj: Any, root: etree._Element) -> list[tuple]:
        return [tuple(node.get(attr) for attr in self.attrs)
                for node in root.findall(self.path)]

    def write(self, obj: Any, root: etree._Element) -> None:
        steps, _ = _split(self.path)
        for item in self.__get__(obj):
            node = etree.SubElement(_ensure(root, steps[:-1]), steps[-1])
            for attr, text in zip(self.attrs, self.clean(tuple(item)), strict=False):
                if text is not None:
                    node.set(attr, text)


def _parse_xml(xml: str) -> etree._Element:
    if not isinstance(xml, (str, bytes)):
        raise exception.InvalidInput(
            reason=f"expected XML text, got {type(xml).__name__}")
    # Bytes, because lxml refuses a str that carries an encoding declaration,
    # and libvirt's own XML (and virsh dumpxml) may carry one.
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False,
                             no_network=True)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise exception.InvalidInput(reason=f"malformed XML: {exc}") from None


class LibvirtConfigObject:
    """Base of the XML objects; a subclass sets ``root_name`` and declares
    its :class:`XMLProperty` attributes.

    Example::

        secret = LibvirtConfigSecret(usage_type="iscsi", usage_id="iqn.x/1")
        text = secret.to_xml()
        assert LibvirtConfigSecret.from_xml(text) == secret
    """

    root_name = ""

    def __init__(self, **values: Any) -> None:
        known = {prop.name for prop in self.xml_properties()}
        for name, value in values.items():
            if name not in known:
                raise TypeError(
                    f"{type(self).__name__} has no XML property {name!r}")
            setattr(self, name, value)

    @classmethod
    def xml_properties(cls) -> list[XMLProperty]:
        """The declared properties, base classes first, in declaration order."""
        found: dict[str, XMLProperty] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, XMLProperty):
                    found[name] = value
        return list(found.values())

    def format_dom(self) -> etree._Element:
        root = etree.Element(self.root_name)
        for prop in self.xml_properties():
            prop.write(self, root)
        return root

    def to_xml(self, pretty: bool = True) -> str:
        return etree.tostring(self.format_dom(), encoding="unicode",
                              pretty_print=pretty)

    def parse_str(self, xml: str) -> None:
        self.parse_dom(_parse_xml(xml))

    def parse_dom(self, element: etree._Element) -> None:
        if element.tag != self.root_name:
            raise exception.InvalidInput(
                reason=f"expected a <{self.root_name}> element, got <{element.tag}>")
        for prop in self.xml_properties():
            setattr(self, prop.name, prop.read(self, element))

    @classmethod
    def from_xml(cls, xml: str) -> Self:
        obj = cls()
        obj.parse_str(xml)
        return obj

    def values(self) -> dict[str, Any]:
        """Every declared property's current value, by name."""
        return {prop.name: getattr(self, prop.name)
                for prop in self.xml_properties()}

    # Defining __eq__ leaves __hash__ None: mutable, compared by value.
    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.values() == other.values()

    def __repr__(self) -> str:
        changed = {name: value for name, value in self.values().items()
                   if value not in (None, False, [])}
        return f"{type(self).__name__}({changed!r})"


def _clean_host(item: tuple) -> tuple[str, str | None]:
    """(name, port) as XML wants it: IPv6 bare, port as text."""
    name, port = item
    name = str(name)
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name, _as_attr_text(port)


_SOURCE_PATHS = {"file": "./source/@file", "block": "./source/@dev"}

def _check_iotune(values: Mapping[str, int | None]) -> None:
    """libvirt's and QEMU's rules across limits (connection_schema.check_iotune)."""
    connection_schema.check_iotune(values)


def _qos_value(key: str, raw: Any) -> int:
    return connection_schema.iotune_value(raw, f"qos_specs {key}")


def _iotune(name: str) -> XMLProperty:
    return XMLProperty(f"./iotune/{name}", kind="int")


def _in_source(path: str) -> XMLProperty:
    """A value written inside ``<source>`` and read from there or from its
    legacy place as a child of ``<disk>``."""
    return XMLProperty(f"./source/{path}", legacy_paths=[f"./{path}"])


class LibvirtConfigGuestDisk(LibvirtConfigObject):
    """A guest ``<disk>``: file, block device or network volume.

    For ``connection_info`` ``{"driver_volume_type": "iscsi", "data":
    {"target_iqn": "iqn.x", "target_lun": 1, "target_portal": "[::1]:3260",
    "auth_method": "CHAP", "auth_username": "u1", "qos_specs": {...}}}``::

        disk = LibvirtConfigGuestDisk(
            source_type="network", source_protocol="iscsi",
            source_name="iqn.x/1", source_hosts=[("[::1]", "3260")],
            auth_username="u1", auth_secret_type="iscsi",
            auth_secret_uuid=secret_uuid, target_dev="sda", target_bus="scsi")
        disk.set_qos_specs(data["qos_specs"])

    ``<auth>`` is written inside ``<source>`` and read from there or from
    its legacy place as a child of ``<disk>``; so is ``<encryption>`` (a
    LUKS volume: ``encryption_format="luks"``, ``encryption_secret_type=
    "passphrase"``, ``encryption_secret_uuid``).
    """

    root_name = "disk"

    source_type = XMLProperty("./@type", default="file")
    source_device = XMLProperty("./@device", default="disk")
    driver_name = XMLProperty("./driver/@name")
    driver_format = XMLProperty("./driver/@type")
    driver_cache = XMLProperty("./driver/@cache")
    driver_io = XMLProperty("./driver/@io")
    driver_discard = XMLProperty("./driver/@discard")
    source_path = XMLProperty(lambda disk: _SOURCE_PATHS.get(disk.source_type))
    source_protocol = XMLProperty("./source/@protocol")
    source_name = XMLProperty("./source/@name")
    source_hosts = XMLTupleList("./source/host", ("name", "port"),
                                clean=_clean_host)
    source_initiator_iqn = XMLProperty("./source/initiator/iqn/@name")
    auth_username = XMLProperty("./source/auth/@username",
                                legacy_paths=["./auth/@username"])
    auth_secret_type = XMLProperty("./source/auth/secret/@type",
                                   legacy_paths=["./auth/secret/@type"])
    auth_secret_uuid = XMLProperty("./source/auth/secret/@uuid",
                                   legacy_paths=["./auth/secret/@uuid"])
    auth_secret_usage = XMLProperty("./source/auth/secret/@usage",
                                    legacy_paths=["./auth/secret/@usage"])
    # QEMU's native LUKS: <encryption format='luks'> with the passphrase
    # secret, inside <source> (where libvirt documents it, per source) or,
    # read only, as a child of <disk> (Nova's place, libvirt's legacy one).
    encryption_format = _in_source("encryption/@format")
    encryption_secret_type = _in_source("encryption/secret/@type")
    encryption_secret_uuid = _in_source("encryption/secret/@uuid")
    encryption_secret_usage = _in_source("encryption/secret/@usage")
    target_dev = XMLProperty("./target/@dev")
    target_bus = XMLProperty("./target/@bus")
    # <iotune>: one property per IOTUNE_KEYS entry, in its order.
    total_bytes_sec = _iotune("total_bytes_sec")
    read_bytes_sec = _iotune("read_bytes_sec")
    write_bytes_sec = _iotune("write_bytes_sec")
    total_iops_sec = _iotune("total_iops_sec")
    read_iops_sec = _iotune("read_iops_sec")
    write_iops_sec = _iotune("write_iops_sec")
    total_bytes_sec_max = _iotune("total_bytes_sec_max")
    read_bytes_sec_max = _iotune("read_bytes_sec_max")
    write_bytes_sec_max = _iotune("write_bytes_sec_max")
    total_iops_sec_max = _iotune("total_iops_sec_max")
    read_iops_sec_max = _iotune("read_iops_sec_max")
    write_iops_sec_max = _iotune("write_iops_sec_max")
    total_bytes_sec_max_length = _iotune("total_bytes_sec_max_length")
    read_bytes_sec_max_length = _iotune("read_bytes_sec_max_length")
    write_bytes_sec_max_length = _iotune("write_bytes_sec_max_length")
    total_iops_sec_max_length = _iotune("total_iops_sec_max_length")
    read_iops_sec_max_length = _iotune("read_iops_sec_max_length")
    write_iops_sec_max_length = _iotune("write_iops_sec_max_length")
    size_iops_sec = _iotune("size_iops_sec")
    logical_block_size = XMLProperty("./blockio/@logical_block_size", kind="int")
    physical_block_size = XMLProperty("./blockio/@physical_block_size", kind="int")
    readonly = XMLProperty("./readonly", kind="flag", default=False)
    shareable = XMLProperty("./shareable", kind="flag", default=False)
    serial = XMLProperty("./serial")

    def set_qos_specs(self, qos_specs: Mapping[str, Any] | None) -> None:
        """Apply Cinder front-end ``qos_specs`` as ``<iotune>`` limits.

        Values may be ints or strings of digits; keys other than
        :data:`IOTUNE_KEYS` are ignored.  0 means "no limit" (as in libvirt)
        and clears the limit.  Nothing changes if any value is invalid.
        """
        if qos_specs is not None and not isinstance(qos_specs, Mapping):
            raise exception.InvalidInput(
                reason=f"qos_specs must be an object, not {type(qos_specs).__name__}")
        given = {key: _qos_value(key, raw)
                 for key, raw in (qos_specs or {}).items()
                 if key in IOTUNE_KEYS and raw is not None}
        merged = self._iotune_values() | {key: value or None
                                          for key, value in given.items()}
        _check_iotune(merged)
        for key in given:
            setattr(self, key, merged[key])

    def _iotune_values(self) -> dict[str, int | None]:
        return {key: getattr(self, key) for key in IOTUNE_KEYS}

    def format_dom(self) -> etree._Element:
        _check_iotune(self._iotune_values())
        return super().format_dom()


class LibvirtConfigDiskLayer(LibvirtConfigGuestDisk):
    """A lower layer of a ``<disk>``, read only: a ``<backingStore>`` (what
    the disk's source was before an external snapshot put an overlay on
    top) or the ``<mirror>`` of a block copy.  Both carry ``type``,
    ``<source>`` and ``<auth>`` exactly as a disk does::

        <backingStore type='network' index='1'>
          <source protocol='iscsi' name='iqn.x/1'> ... <auth>...</auth></source>
        </backingStore>
    """

    root_name = "backingStore"
    LAYER_TAGS = ("backingStore", "mirror")

    def parse_dom(self, element: etree._Element) -> None:
        if element.tag not in self.LAYER_TAGS:
            raise exception.InvalidInput(
                reason=f"expected a disk layer ({', '.join(self.LAYER_TAGS)}), "
                f"got <{element.tag}>")
        for prop in self.xml_properties():
            setattr(self, prop.name, prop.read(self, element))


_USAGE_ID_PATHS = {
    "iscsi": "./usage/target",
    "ceph": "./usage/name",
    "volume": "./usage/volume",
}


class LibvirtConfigSecret(LibvirtConfigObject):
    """A libvirt ``<secret>``, e.g. the CHAP password of an iSCSI volume.

    For ``connection_info`` data ``{"target_iqn": "iqn.x", "target_lun": 1,
    "auth_method": "CHAP", ...}``::

        secret = LibvirtConfigSecret(
            private=True, usage_type="iscsi", usage_id="iqn.x/1",
            description="CHAP secret of iqn.x/1")
        conn.secretDefineXML(secret.to_xml())

    The usage element follows the type: ``iscsi`` -> ``<target>``,
    ``ceph`` -> ``<name>``, ``volume`` -> ``<volume>``.
    """

    root_name = "secret"

    ephemeral = XMLProperty("./@ephemeral", kind="yesno", default=False)
    private = XMLProperty("./@private", kind="yesno", default=False)
    uuid = XMLProperty("./uuid")
    description = XMLProperty("./description")
    usage_type = XMLProperty("./usage/@type")
    usage_id = XMLProperty(lambda secret: _USAGE_ID_PATHS.get(secret.usage_type))

    def format_dom(self) -> etree._Element:
        if self.usage_type is not None and self.usage_type not in _USAGE_ID_PATHS:
            raise exception.InvalidInput(
                reason=f"secret usage type {self.usage_type!r} is not one of "
                       f"{', '.join(_USAGE_ID_PATHS)}")
        if (self.usage_type is None) != (self.usage_id is None):
            raise exception.InvalidInput(
                reason="a secret's usage_type and usage_id go together; "
                       f"got type {self.usage_type!r}, id {self.usage_id!r}")
        return super().format_dom()


class LibvirtConfigDeviceXML:
    """A device element exactly as libvirt wrote it, handed back to libvirt.

    ``detachDeviceFlags`` is given the ``<disk>`` libvirt showed (parsing and
    formatting it would drop what hvplug does not declare: ``<address>``,
    ``<alias>``, ``index=``), and a live disk added to the persistent config
    keeps its address; :class:`~hvplug.virt.host.Host` takes this like any
    config object::

        host.detach_device("guest1", LibvirtConfigDeviceXML(found.xml), "sdb")
    """

    def __init__(self, xml: str) -> None:
        self.xml = xml

    @classmethod
    def for_config(cls, live_xml: str) -> "LibvirtConfigDeviceXML":
        """A live device as the persistent config takes it: no runtime ``<alias>``."""
        element = _parse_xml(live_xml)
        for alias in element.findall("alias"):
            element.remove(alias)
        return cls(etree.tostring(element, encoding="unicode"))

    def to_xml(self, pretty: bool = True) -> str:
        return self.xml
