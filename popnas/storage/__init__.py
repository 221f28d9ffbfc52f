"""Where results, search state and step tables are kept: the ``Store`` protocol and its implementations."""

from popnas.storage.local import LocalStore
from popnas.storage.protocol import Store

__all__ = ["LocalStore", "Store"]
