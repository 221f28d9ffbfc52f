"""The ``popnas`` command."""

from popnas.cli.main import main

__all__ = ["main"]
