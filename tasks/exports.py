"""A package's public names, imported on first use.

A package's `__init__` names its entry points this way so that importing the package costs
nothing (a command's `--help` never pays for torch or pandas) and its modules can import each
other without a cycle through the `__init__`.
"""
from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, names: dict[str, str]):
    """A module `__getattr__` for `package`: each public name -> the module (inside the
    package) that defines it."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{names[name]}"), name)

    return __getattr__
