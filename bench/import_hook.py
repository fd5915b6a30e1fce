"""Run a function on a module right after it is first imported: how the bench's
sitecustomize hooks (snapshot_hook/, profile_hook/) wrap trainer functions without changing
the trainer."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, wraps: dict[str, Callable[[ModuleType], None]]) -> None:
        self.wraps = wraps

    def find_spec(self, name, path, target=None):
        if name not in self.wraps:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            self.wraps[name](module)

        spec.loader.exec_module = exec_module
        return spec


def wrap_after_import(wraps: dict[str, Callable[[ModuleType], None]]) -> None:
    sys.meta_path.insert(0, _Finder(wraps))
