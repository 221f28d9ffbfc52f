"""Storage of results, search state and step tables: the ``Store`` protocol and its implementations."""

from popnas.storage.local import LocalStore
from popnas.storage.protocol import Store

__all__ = ["LocalStore", "Store"]
