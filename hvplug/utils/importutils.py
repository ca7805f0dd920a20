"""One loader for the dotted class paths the options name.

``[libvirt] volume_drivers``, ``[<backend>] volume_driver`` and
``[target] iscsi_helper`` all name a class as ``package.module.Class``;
``import_class`` imports it and checks it, and each caller turns an
``ImportClassError`` into its own error naming its option.
"""

import importlib
from typing import TypeVar, overload

T = TypeVar("T")


class ImportClassError(ValueError):
    """Why ``path`` names no usable class: ``reason`` (one line) and ``kind``,
    one of "syntax", "import", "missing" (no such name), "type" (not a class,
    or not a subclass of the base)."""

    def __init__(self, path: str, kind: str, reason: str):
        super().__init__(reason)
        self.path = path
        self.kind = kind
        self.reason = reason


@overload
def import_class(path: str, base: type[T]) -> type[T]: ...
@overload
def import_class(path: str, base: None = None) -> type: ...
def import_class(path, base=None):
    """``"pkg.mod.Class"`` → the class; a subclass of ``base`` when given.

    Raises ``ImportClassError`` with a reason: "expected a dotted.path.Class",
    "cannot import pkg.mod: ...", "pkg.mod has no Class", "pkg.mod.Class is
    not a Base subclass" (or "is not a class").
    """
    path = (path or "").strip()
    module_name, dot, class_name = path.rpartition(".")
    if not dot or not module_name or not class_name:
        raise ImportClassError(path, "syntax", "expected a dotted.path.Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportClassError(path, "import", f"cannot import {module_name}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ImportClassError(path, "missing", f"{module_name} has no {class_name}")
    if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
        raise ImportClassError(path, "type", f"{path} is not a {base.__name__} subclass")
    if not isinstance(cls, type):
        raise ImportClassError(path, "type", f"{path} is not a class")
    return cls
