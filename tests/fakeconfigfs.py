"""A fake configfs in which the real rtslib-fb drives a pretend LIO kernel.

This machine has no configfs and no LIO (no ``/sys/kernel/config/target``),
so LIO's helper is tested here: the unmodified ``rtslib_fb`` code runs
against a plain directory, and the kernel's reactions to what rtslib does
are emulated at the file-system calls rtslib makes.

How
---
``FakeConfigfs(base).install(monkeypatch)`` points rtslib at
``<base>/config/target`` (``CFSNode.configfs_dir``), replaces its two
host-level helpers (``modprobe``, ``mount_configfs``), moves the two host
paths it hard-codes (``/etc/target`` as dbroot, ``/var/run`` backstore
lock) under ``base``, and wraps ``os.mkdir``, ``os.rmdir``, ``os.unlink``,
``os.symlink`` and ``pathlib.Path.write_text`` (rtslib's ``fwrite``) so
that, *for paths under the fake tree only*, they behave as configfs does:

- ``mkdir`` works only where the kernel has a ``make_group`` (elsewhere
  EPERM), checks the name as the kernel does (``tpgt_N``, ``lun_N``,
  ``<plugin>_N``, ``ip:port`` with IPv6 in brackets: else EINVAL), and
  creates the new object's attribute files and default groups at once
  (``tpgt_1/{enable,attrib/*,param/*,auth/*,np,lun,acls}``, a storage
  object's ``info``, ``control``, ``enable``, ``udev_path``, ``wwn/``,
  ``alua/default_tg_pt_gp`` ...), with the kernel's modes and defaults.
  A portal whose address is in ``unbindable`` fails as the kernel's bind
  does (EADDRNOTAVAIL unless another errno is given).
- ``rmdir`` refuses default groups (EPERM) and objects that still hold
  user-made children or links (ENOTEMPTY), and removes the attribute files
  and default groups with the object.
- Writing an attribute: a name that does not exist cannot be created
  (EACCES), read-only ones refuse (EACCES), numbers are parsed as
  ``kstrtou32`` (EINVAL); and the reactions rtslib relies on happen:
  ``control`` is parsed (``fd_dev_name``/``fd_dev_size`` ...,
  ``udev_path=``), ``enable`` configures the storage object (EINVAL without
  a name or a size, ENOTBLK for iblock on a non-block path, EEXIST the
  second time) and fills ``info`` as the kernel formats it; a TPG refuses
  ``enable`` twice (EINVAL); ``np/*/iser`` fails (EINVAL, as with no
  ``ib_isert``) when ``iser_supported`` is False, or is absent altogether
  with ``iser_attr=False`` (kernels before the attribute existed);
  ``dbroot`` must name an existing directory and cannot change once a
  device is configured; CHAP values of 256 bytes or more are refused.
- ``symlink`` works only in a LUN (to a *configured* storage object, once:
  EFAULT/ENODEV/EEXIST) and in a mapped LUN (to a LUN of the same TPG:
  EINVAL); a LUN link marks the storage object ``ACTIVATED`` in ``info``
  and names the ALUA group in ``alua_tg_pt_gp``. ``unlink`` removes links
  only (EPERM for attribute files).
- ``modprobe("target_core_mod")`` creates ``target/`` (``lio_available``
  False makes it fail as on a host without LIO); ``mkdir target/iscsi``
  registers the iSCSI fabric, as the kernel's ``make_group`` does.
  ``reboot()`` wipes everything, as a reboot or a target-service restart
  without a restore leaves the kernel.

What differs from the kernel
----------------------------
Nothing listens, logs in, or moves data: portals, ACLs and CHAP are only
files. Reads are plain reads (a write-only ``control`` would read back
empty here, EACCES there); files written by other means than
``Path.write_text`` (e.g. ``open(path, "w")``) get no reaction, so this
needs rtslib-fb >= 2.2, which writes through ``pathlib``. Only the fileio
and iblock backstores and the iSCSI fabric are emulated; statistics groups
are empty; the TPG ``param`` values and ALUA state never change on their
own; a storage object that LUNs still link to can be removed (the kernel
keeps a reference); iblock does not claim the device exclusively. The
``info`` formats are modelled on kernel 6.x (iblock before 6.17, without
``exclusive``). What passes here proves that hvplug drives rtslib
correctly and that rtslib accepts the result; it does not prove that a
real kernel accepts every value, which only a host with LIO can show
(doc/lio.md says how to check one).
"""

import errno
import ipaddress
import os
import pathlib
import re
import stat
from dataclasses import dataclass, field

RW, RO, WO = 0o644, 0o444, 0o200


@dataclass(frozen=True)
class Kind:
    """One kind of configfs directory: its attributes and what may go in it."""

    attrs: dict = field(default_factory=dict)   # name -> (mode, initial value)
    groups: dict = field(default_factory=dict)  # default group name -> kind
    child: str | None = None                    # kind that mkdir makes here
    link: str | None = None                     # kind a symlink here points at


def _rw(**values) -> dict:
    return {k: (RW, str(v)) for k, v in values.items()}


def _ro(**values) -> dict:
    return {k: (RO, str(v)) for k, v in values.items()}


_AUTH = {**_rw(userid="", password="", userid_mutual="", password_mutual=""),
         **_ro(authenticate_target=0)}
_AUTH_NAMES = ("userid", "password", "userid_mutual", "password_mutual")
_SO_ATTRIB = {
    **_rw(block_size=512, emulate_3pc=1, emulate_caw=1, emulate_dpo=1,
          emulate_fua_read=1, emulate_fua_write=1, emulate_model_alias=1,
          emulate_pr=1, emulate_rest_reord=0, emulate_tas=1, emulate_tpu=0,
          emulate_tpws=0, emulate_ua_intlck_ctrl=0, emulate_write_cache=0,
          enforce_pr_isids=1, force_pr_aptpl=0, is_nonrot=0,
          max_unmap_block_desc_count=1, max_unmap_lba_count=8192,
          max_write_same_len=4096, optimal_sectors=16384, pi_prot_format=0,
          pi_prot_type=0, queue_depth=128, unmap_granularity=1,
          unmap_granularity_alignment=0, unmap_zeroes_data=0),
    **_ro(hw_block_size=512, hw_max_sectors=16384, hw_pi_prot_type=0,
          hw_queue_depth=128, alua_support=1, pgr_support=1)}
_ALUA_TPG = {
    **_rw(alua_access_state=0, alua_access_status="None",
          alua_access_type="Implicit and Explicit", alua_write_metadata=0,
          preferred=0, nonop_delay_msecs=100, trans_delay_msecs=0,
          implicit_trans_secs=0, alua_support_offline=1, alua_support_standby=1,
          alua_support_transitioning=1, alua_support_active_nonoptimized=1,
          alua_support_unavailable=1, alua_support_active_optimized=1,
          tg_pt_gp_id=0),
    **_ro(alua_support_lba_dependent=0, members="")}
_TPG_ATTRIB = _rw(
    authentication=1, login_timeout=15, netif_timeout=2, generate_node_acls=0,
    default_cmdsn_depth=64, cache_dynamic_acls=0, demo_mode_write_protect=1,
    prod_mode_write_protect=0, demo_mode_discovery=1, default_erl=0, t10_pi=0,
    fabric_prot_type=0, tpg_enabled_sendtargets=1, login_keys_workaround=1)
_TPG_PARAM = _rw(
    AuthMethod="CHAP,None", HeaderDigest="CRC32C,None", DataDigest="CRC32C,None",
    MaxConnections=1, TargetAlias="LIO Target", InitialR2T="Yes",
    ImmediateData="Yes", MaxRecvDataSegmentLength=8192,
    MaxXmitDataSegmentLength=262144, MaxBurstLength=262144,
    FirstBurstLength=65536, DefaultTime2Wait=2, DefaultTime2Retain=20,
    MaxOutstandingR2T=1, DataPDUInOrder="Yes", DataSequenceInOrder="Yes",
    ErrorRecoveryLevel=0, IFMarker="No", OFMarker="No", IFMarkInt="2048~65535",
    OFMarkInt="2048~65535")
_ACL_ATTRIB = _rw(
    dataout_timeout=3, dataout_timeout_retries=5, default_erl=0, nopin_timeout=15,
    nopin_response_timeout=30, random_datain_pdu_offsets=0,
    random_datain_seq_offsets=0, random_r2t_offsets=0)
_ACL_PARAM = dict.fromkeys(
    ("MaxConnections", "InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength",
     "DefaultTime2Wait", "DefaultTime2Retain", "MaxOutstandingR2T", "DataPDUInOrder",
     "DataSequenceInOrder", "ErrorRecoveryLevel"),
    (RO, "No Active iSCSI Session"))

KINDS = {
    "root": Kind({**_ro(version="Target Engine Core ConfigFS Infrastructure v5.0"),
                  **_rw(dbroot="/var/target")}, {"core": "core"}, child="fabric"),
    "core": Kind(groups={"alua": "core_alua"}, child="hba"),
    "core_alua": Kind(groups={"lu_gps": "plain"}),
    "hba": Kind({**_ro(hba_info=""), **_rw(hba_mode=0)}, child="so"),
    "so": Kind({"info": (RO, ""), "control": (WO, ""), **_rw(enable=0, udev_path="")},
               {"attrib": "so_attrib", "pr": "so_pr", "wwn": "so_wwn",
                "alua": "so_alua", "statistics": "plain"}),
    "so_attrib": Kind(_SO_ATTRIB),
    "so_pr": Kind({**_rw(res_aptpl_metadata=""), **_ro(res_aptpl_active=0)}),
    "so_wwn": Kind(_rw(vpd_unit_serial="T10 VPD Unit Serial Number:")),
    "so_alua": Kind(groups={"default_tg_pt_gp": "alua_tpg"}, child="alua_tpg"),
    "alua_tpg": Kind(_ALUA_TPG),
    "fabric": Kind({**_ro(lio_version="Datera Inc. iSCSI Target v4.1.0"),
                    **_rw(cpus_allowed_list="0-1")},
                   {"discovery_auth": "disc_auth"}, child="wwn"),
    "disc_auth": Kind({**_AUTH, **_rw(enforce_discovery_auth=0)}),
    "wwn": Kind(groups={"fabric_statistics": "plain"}, child="tpg"),
    "tpg": Kind({**_rw(enable=0), **_ro(dynamic_sessions="")},
                {"attrib": "tpg_attrib", "auth": "tpg_auth", "param": "tpg_param",
                 "np": "np_group", "lun": "lun_group", "acls": "acl_group"}),
    "tpg_attrib": Kind(_TPG_ATTRIB),
    "tpg_auth": Kind(_AUTH),
    "tpg_param": Kind(_TPG_PARAM),
    "np_group": Kind(child="np"),
    "np": Kind(_rw(iser=0, cxgbit=0)),
    "lun_group": Kind(child="lun"),
    "lun": Kind(_rw(alua_tg_pt_gp="", alua_tg_pt_offline=0, alua_tg_pt_status=0,
                    alua_tg_pt_write_md=0), {"statistics": "plain"}, link="so"),
    "acl_group": Kind(child="acl"),
    "acl": Kind({**_ro(info=""), **_rw(cmdsn_depth=64, tag="")},
                {"attrib": "acl_attrib", "auth": "acl_auth", "param": "acl_param",
                 "fabric_statistics": "plain"}, child="mapped_lun"),
    "acl_attrib": Kind(_ACL_ATTRIB),
    "acl_auth": Kind(_AUTH),
    "acl_param": Kind(_ACL_PARAM),
    "mapped_lun": Kind(_rw(write_protect=0), {"statistics": "plain"}, link="lun"),
    "plain": Kind(),
}
_NAMES = {"fabric": r"iscsi", "hba": r"(fileio|iblock|pscsi|rd_mcp|user)_\d+",
          "tpg": r"tpgt_\d{1,5}", "lun": r"lun_\d+", "mapped_lun": r"lun_\d+",
          "wwn": r".{1,223}", "acl": r".{1,223}", "alua_tpg": r".+"}
# Objects a user (rtslib) makes, as opposed to default groups and fabrics.
_OBJECTS = {"hba", "so", "alua_tpg", "wwn", "tpg", "np", "lun", "acl", "mapped_lun"}


def _error(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def _u32(data: str, path: str) -> int:
    """The kernel's kstrtou32: digits (or 0x...), one trailing newline."""
    text = data.removesuffix("\n")
    if not re.fullmatch(r"0x[0-9a-fA-F]+|\d+", text):
        raise _error(errno.EINVAL, path)
    value = int(text, 16 if text.startswith("0x") else 10)
    if value >= 2 ** 32:
        raise _error(errno.ERANGE, path)
    return value


def _flag(data: str, path: str) -> int:
    value = _u32(data, path)
    if value not in (0, 1):
        raise _error(errno.EINVAL, path)
    return value


class FakeConfigfs:
    """``<base>/config`` plays ``/sys/kernel/config``; see the module doc."""

    def __init__(self, base, *, iser_supported: bool = True, iser_attr: bool = True,
                 lio_available: bool = True):
        base = pathlib.Path(base).resolve()
        self.root = base / "config"
        self.target = self.root / "target"
        self.dbroot = base / "etc-target"
        self.lock_file = base / "rtslib_backstore.lock"
        for path in (self.root, self.dbroot):
            path.mkdir(parents=True, exist_ok=True)
        self.iser_supported, self.iser_errno = iser_supported, errno.EINVAL
        self.iser_attr, self.lio_available = iser_attr, lio_available
        self.unbindable: dict[str, int] = {}      # portal address -> errno of bind
        self.writes: list[tuple[str, str]] = []   # (path under target/, value)
        self._kinds: dict[str, str] = {}
        self._default: set[str] = set()
        self._so: dict[str, dict] = {}
        self._orig = {"mkdir": os.mkdir, "rmdir": os.rmdir, "unlink": os.unlink,
                      "symlink": os.symlink, "write_text": pathlib.Path.write_text}

    # -- installing ----------------------------------------------------------
    def install(self, monkeypatch) -> "FakeConfigfs":
        import rtslib_fb.fabric
        import rtslib_fb.node
        import rtslib_fb.root
        import rtslib_fb.tcm

        monkeypatch.setattr(rtslib_fb.node.CFSNode, "configfs_dir", str(self.target))
        monkeypatch.setattr(rtslib_fb.root, "mount_configfs", lambda: None)
        monkeypatch.setattr(rtslib_fb.root, "modprobe", self.modprobe)
        monkeypatch.setattr(rtslib_fb.fabric, "modprobe", self.modprobe)
        monkeypatch.setattr(rtslib_fb.tcm, "lock_file", str(self.lock_file))
        monkeypatch.setattr(rtslib_fb.root.RTSRoot, "_preferred_dbroot", str(self.dbroot))
        monkeypatch.setattr(os, "mkdir", self._mkdir)
        monkeypatch.setattr(os, "rmdir", self._rmdir)
        monkeypatch.setattr(os, "unlink", self._unlink)
        monkeypatch.setattr(os, "symlink", self._symlink)
        fake, write_text = self, self._orig["write_text"]

        def fake_write_text(path, data, encoding=None, errors=None, newline=None):
            ours = fake._ours(path)
            if ours is None:
                return write_text(path, data, encoding, errors, newline)
            fake._store(ours, data)
            return len(data)

        monkeypatch.setattr(pathlib.Path, "write_text", fake_write_text)
        rtslib_fb.tcm.bs_cache.clear()  # rtslib's per-process index cache
        return self

    def modprobe(self, module: str) -> None:
        from rtslib_fb.utils import RTSLibError

        if module == "configfs":
            return
        if self.lio_available and module == "target_core_mod":
            if not self.target.is_dir():
                self._populate(str(self.target), "root")
            return
        if self.lio_available and module == "iscsi_target_mod":
            return  # mkdir target/iscsi registers the fabric
        raise RTSLibError(f"modprobe: FATAL: Module {module} not found")

    def reboot(self) -> None:
        """The kernel forgets every LIO object (and unloads LIO)."""
        if self.target.exists():
            self._raw_rmtree(str(self.target))
        self._kinds.clear()
        self._default.clear()
        self._so.clear()

    # -- looking at the tree (tests read files directly too) -----------------
    def rel(self, path) -> str:
        return os.path.relpath(path, self.target)

    def read(self, rel: str) -> str:
        return (self.target / rel).read_text().strip()

    def objects(self) -> set[str]:
        """Every object rtslib made, and every link as ``dir -> target``."""
        found = {self.rel(p) for p, k in self._kinds.items()
                 if k in _OBJECTS and p not in self._default}
        for p, kind in self._kinds.items():
            if kind in ("lun", "mapped_lun"):
                found.update(f"{self.rel(p)} -> {self.rel(os.path.realpath(link))}"
                             for link in self._links(p))
        return found

    # -- the wrapped system calls ---------------------------------------------
    def _ours(self, path, dir_fd=None) -> str | None:
        if dir_fd is not None or isinstance(path, bytes):
            return None
        p = os.path.abspath(os.fspath(path))
        root = str(self.root)
        return p if p == root or p.startswith(root + os.sep) else None

    def _mkdir(self, path, mode=0o777, *, dir_fd=None):
        p = self._ours(path, dir_fd)
        if p is None:
            return self._orig["mkdir"](path, mode, dir_fd=dir_fd)
        parent, name = os.path.split(p)
        if os.path.lexists(p):
            raise _error(errno.EEXIST, p)
        if not os.path.isdir(parent):
            raise _error(errno.ENOENT, p)
        child = KINDS[self._kinds[parent]].child if parent in self._kinds else None
        if child is None:  # no make_group here (e.g. the configfs root, a TPG)
            raise _error(errno.EPERM, p)
        if not re.fullmatch(_NAMES.get(child, r".+"), name):
            raise _error(errno.EINVAL, p)
        if child == "np":
            self._bind(name, p)
        self._populate(p, child)

    def _rmdir(self, path, *, dir_fd=None):
        p = self._ours(path, dir_fd)
        if p is None or p not in self._kinds:
            return self._orig["rmdir"](path, dir_fd=dir_fd)
        if p in self._default or p == str(self.target):
            raise _error(errno.EPERM, p)
        if self._user_children(p):
            raise _error(errno.ENOTEMPTY, p)
        self._raw_rmtree(p)

    def _unlink(self, path, *, dir_fd=None):
        p = self._ours(path, dir_fd)
        if p is None:
            return self._orig["unlink"](path, dir_fd=dir_fd)
        if not os.path.islink(p):
            raise _error(errno.EPERM if os.path.lexists(p) else errno.ENOENT, p)
        target = os.path.realpath(p)
        self._orig["unlink"](p)
        if self._kinds.get(os.path.dirname(p)) == "lun" and target in self._so:
            self._so[target]["luns"].discard(os.path.dirname(p))
            self._lun_changed(os.path.dirname(p), target)

    def _symlink(self, src, dst, target_is_directory=False, *, dir_fd=None):
        d = self._ours(dst, dir_fd)
        if d is None:
            return self._orig["symlink"](src, dst, target_is_directory, dir_fd=dir_fd)
        parent = os.path.dirname(d)
        want = KINDS[self._kinds[parent]].link if parent in self._kinds else None
        if os.path.lexists(d):
            raise _error(errno.EEXIST, d)
        if want is None:  # no allow_link here
            raise _error(errno.EPERM, d)
        s = self._ours(os.path.join(parent, os.fspath(src)))
        if s is None:
            raise _error(errno.EPERM, d)  # outside configfs
        if not os.path.isdir(s):
            raise _error(errno.ENOENT, d)
        s = os.path.realpath(s)
        self._check_link(want, parent, s, d)
        self._orig["symlink"](src, d, target_is_directory)
        if want == "so":
            self._so[s]["luns"].add(parent)
            self._lun_changed(parent, s)

    def _check_link(self, want: str, parent: str, s: str, d: str) -> None:
        if self._kinds.get(s) != want:
            raise _error(errno.EFAULT if want == "so" else errno.EINVAL, d)
        if want == "so":
            if not self._so[s]["configured"]:
                raise _error(errno.ENODEV, d)  # "se_device not configured yet"
            if self._links(parent):
                raise _error(errno.EEXIST, d)
        elif _up(s, 2) != _up(parent, 3) or not self._links(s):
            raise _error(errno.EINVAL, d)  # a LUN of another TPG, or an empty one

    # -- creating and removing objects ---------------------------------------
    def _populate(self, p: str, kind: str, default: bool = False) -> None:
        self._orig["mkdir"](p)
        self._kinds[p] = kind
        if default:
            self._default.add(p)
        for name, (mode, value) in KINDS[kind].attrs.items():
            if kind == "np" and name == "iser" and not self.iser_attr:
                continue
            self._put(os.path.join(p, name), f"{value}\n", mode)
        for name, sub in KINDS[kind].groups.items():
            self._populate(os.path.join(p, name), sub, default=True)
        init = getattr(self, f"_init_{kind}", None)
        if init:
            init(p)

    def _init_hba(self, p: str) -> None:
        plugin, index = os.path.basename(p).rsplit("_", 1)
        self._put(os.path.join(p, "hba_info"),
                  f"HBA Index: {index} plugin: {plugin} version: v5.0\n")

    def _init_so(self, p: str) -> None:
        plugin, index = os.path.basename(os.path.dirname(p)).rsplit("_", 1)
        self._so[p] = {"plugin": plugin, "index": index, "params": {},
                       "configured": False, "luns": set()}
        self._refresh_info(p)

    def _init_acl(self, p: str) -> None:
        self._put(os.path.join(p, "info"), "No active iSCSI Session for Initiator"
                  f" Endpoint: {os.path.basename(p)}\n")
        self._put(os.path.join(p, "tag"), "")

    def _bind(self, name: str, p: str) -> None:
        match = re.fullmatch(r"\[(.+)\]:(\d+)|([^:\[\]]+):(\d+)", name)
        if not match:
            raise _error(errno.EINVAL, p)  # IPv6 needs brackets
        address, port = (match[1], match[2]) if match[1] else (match[3], match[4])
        try:
            version = ipaddress.ip_address(address).version
        except ValueError:
            raise _error(errno.EINVAL, p) from None
        if (version == 6) != bool(match[1]) or not 0 < int(port) < 65536:
            raise _error(errno.EINVAL, p)
        if address in self.unbindable:
            raise _error(self.unbindable[address] or errno.EADDRNOTAVAIL, p)

    def _user_children(self, p: str) -> list[str]:
        found = []
        for entry in os.scandir(p):
            if entry.is_symlink():
                found.append(entry.path)
            elif entry.is_dir():
                found.extend(self._user_children(entry.path) if entry.path in self._default
                             else [entry.path])
        return found

    def _raw_rmtree(self, p: str) -> None:
        for dirpath, dirnames, filenames in os.walk(p, topdown=False):
            for name in filenames:
                self._orig["unlink"](os.path.join(dirpath, name))
            for name in dirnames:
                path = os.path.join(dirpath, name)
                (self._orig["unlink"] if os.path.islink(path) else self._orig["rmdir"])(path)
        self._orig["rmdir"](p)
        for table in (self._kinds, self._so):
            for key in [k for k in table if k == p or k.startswith(p + os.sep)]:
                del table[key]
        self._default = {k for k in self._default if not k.startswith(p + os.sep)}

    def _links(self, p: str) -> list[str]:
        return [e.path for e in os.scandir(p) if e.is_symlink()]

    # -- attribute writes and the kernel's reactions ----------------------------
    def _put(self, path: str, text: str, mode: int | None = None) -> None:
        # The fake plays the kernel, which writes its read-only attributes too:
        # root ignores the mode bits, a normal user must lift them first.
        if os.path.exists(path):
            if mode is None:
                mode = stat.S_IMODE(os.stat(path).st_mode)
            os.chmod(path, mode | stat.S_IWUSR)
        with open(path, "w") as f:
            f.write(text)
        if mode is not None:
            os.chmod(path, mode)

    def _store(self, p: str, data: str) -> None:
        parent, name = os.path.split(p)
        kind = self._kinds.get(parent)
        if kind is None or not os.path.lexists(p):  # configfs cannot create files
            raise _error(errno.EACCES if kind else errno.ENOENT, p)
        if os.path.isdir(p):
            raise _error(errno.EISDIR, p)
        if not os.stat(p).st_mode & stat.S_IWUSR:
            raise _error(errno.EACCES, p)
        self.writes.append((self.rel(p), data))
        handler = getattr(self, f"_set_{kind}_{name}", None)
        if handler is None and kind.endswith("auth") and name in _AUTH_NAMES:
            handler = self._set_auth
        shown = (handler or self._set_generic)(parent, p, data)
        if shown is not None:
            self._put(p, shown)

    def _set_generic(self, parent: str, p: str, data: str) -> str:
        with open(p) as f:
            if f.read().strip().isdigit():
                return f"{_u32(data, p)}\n"
        return data.rstrip("\n") + "\n"

    def _set_auth(self, parent: str, p: str, data: str) -> str:
        if len(data) >= 256:
            raise _error(errno.EINVAL, p)
        self._put(p, data.rstrip("\n") + "\n")
        mutual = [self._value(os.path.join(parent, n)) for n in _AUTH_NAMES[2:]]
        both = all(v and v != "NULL" for v in mutual)
        self._put(os.path.join(parent, "authenticate_target"), f"{int(both)}\n")
        return None

    def _set_root_dbroot(self, parent: str, p: str, data: str) -> str:
        if not os.path.isdir(data.strip()) or any(s["configured"] for s in self._so.values()):
            raise _error(errno.EINVAL, p)
        return data.strip() + "\n"

    def _set_so_control(self, parent: str, p: str, data: str) -> str:
        params = self._so[parent]["params"]
        for token in data.strip().split(","):
            key, _, value = token.partition("=")
            numeric = key in ("fd_dev_size", "fd_buffered_io", "fd_async_io", "readonly")
            if numeric and not value.isdigit():
                raise _error(errno.EINVAL, p)
            params[key.strip()] = value
        return ""  # write-only

    def _set_so_enable(self, parent: str, p: str, data: str) -> str:
        state = self._so[parent]
        if "1" not in data:
            raise _error(errno.EINVAL, p)
        if state["configured"]:
            raise _error(errno.EEXIST, p)
        params, plugin = state["params"], state["plugin"]
        if plugin == "fileio":
            name = params.get("fd_dev_name")
            if not name:
                raise _error(errno.EINVAL, p)
            if not os.path.exists(name):
                open(name, "a").close()  # the kernel opens it with O_CREAT
            if not stat.S_ISBLK(os.stat(name).st_mode) and "fd_dev_size" not in params:
                raise _error(errno.EINVAL, p)  # "Missing fd_dev_size="
        elif plugin == "iblock":
            udev = params.get("udev_path")
            if not udev:
                raise _error(errno.EINVAL, p)
            if not stat.S_ISBLK(os.stat(udev).st_mode):
                raise _error(errno.ENOTBLK, p)
        else:
            raise _error(errno.ENOSYS, p)  # backstore not emulated
        state["configured"] = True
        self._refresh_info(parent)
        return "1\n"

    def _set_so_udev_path(self, parent: str, p: str, data: str) -> str:
        if len(data) > 511:
            raise _error(errno.EINVAL, p)
        return data.rstrip("\n") + "\n"

    def _set_so_wwn_vpd_unit_serial(self, parent: str, p: str, data: str) -> str:
        if self._so[os.path.dirname(parent)]["luns"]:
            raise _error(errno.EINVAL, p)  # not while exported
        return f"T10 VPD Unit Serial Number: {data.strip()}\n"

    def _set_tpg_enable(self, parent: str, p: str, data: str) -> str:
        value = _flag(data, p)
        if value and self._value(p) == "1":
            raise _error(errno.EINVAL, p)  # "already active"
        return f"{value}\n"

    def _set_np_iser(self, parent: str, p: str, data: str) -> str:
        value = _flag(data, p)
        if value and self._value(p) != "1":
            address = os.path.basename(parent).rsplit(":", 1)[0].strip("[]")
            if not self.iser_supported:
                raise _error(self.iser_errno, p)
            if address in self.unbindable:
                raise _error(self.unbindable[address] or errno.EADDRNOTAVAIL, p)
        return f"{value}\n"

    def _set_np_cxgbit(self, parent: str, p: str, data: str) -> str:
        if _flag(data, p):
            raise _error(errno.ENODEV, p)  # no Chelsio offload here
        return "0\n"

    def _set_lun_alua_tg_pt_gp(self, parent: str, p: str, data: str) -> str:
        if not self._links(parent):
            raise _error(errno.ENODEV, p)
        return f"TG Port Alias: {data.strip()}\nTG Port Group ID: 0\n"

    def _set_mapped_lun_write_protect(self, parent: str, p: str, data: str) -> str:
        return f"{_flag(data, p)}\n"

    def _set_acl_cmdsn_depth(self, parent: str, p: str, data: str) -> str:
        if _u32(data, p) > 512:
            raise _error(errno.EINVAL, p)
        return data.strip() + "\n"

    def _set_acl_tag(self, parent: str, p: str, data: str) -> str:
        return "" if data.strip() == "NULL" else data.strip()

    def _value(self, path: str) -> str:
        with open(path) as f:
            return f.read().strip()

    def _lun_changed(self, lun: str, so: str) -> None:
        linked = bool(self._links(lun))
        self._put(os.path.join(lun, "alua_tg_pt_gp"),
                  "TG Port Alias: default_tg_pt_gp\nTG Port Group ID: 0\n" if linked else "\n")
        members = sorted(self.rel(p) for p in self._so[so]["luns"])
        self._put(os.path.join(so, "alua", "default_tg_pt_gp", "members"),
                  "".join(f"{m}\n" for m in members))
        self._refresh_info(so)

    def _refresh_info(self, so: str) -> None:
        """``info`` as the kernel prints it (transport_dump_dev_state + backend)."""
        state = self._so[so]
        params, configured = state["params"], state["configured"]
        status = "ACTIVATED" if state["luns"] else "DEACTIVATED"
        depth, sector = (128, 512) if configured else (0, 0)
        text = (f"Status: {status}  Max Queue Depth: {depth}  SectorSize: {sector}"
                f"  HwMaxSectors: {16384 if configured else 0}\n        ")
        if state["plugin"] == "fileio":
            mode = "Buffered-WCE" if params.get("fd_buffered_io") == "1" else "O_DSYNC"
            text += (f"TCM FILEIO ID: {state['index']}        File: "
                     f"{params.get('fd_dev_name', '')}  Size: {params.get('fd_dev_size', 0)}"
                     f"  Mode: {mode} Async: {params.get('fd_async_io', '0')}\n")
        else:
            udev = params.get("udev_path", "")
            device, major, minor = "", 0, 0
            if configured:
                rdev = os.stat(udev).st_rdev
                device, major, minor = (os.path.basename(os.path.realpath(udev)),
                                        os.major(rdev), os.minor(rdev))
            text += (f"iBlock device: {device}  UDEV PATH: {udev}  readonly: "
                     f"{params.get('readonly', '0')}\n        Major: {major} Minor: {minor}"
                     f"{'  CLAIMED: IBLOCK' if configured else ''}\n")
        self._put(os.path.join(so, "info"), text)


def _up(path: str, levels: int) -> str:
    for _ in range(levels):
        path = os.path.dirname(path)
    return path
