"""Lazy attribute exports for the package ``__init__`` files (PEP 562).

``import processing.ecg`` must not import transformers or torch: the dataset builders use the lead
names and the record reader without them. Each ``__init__`` lists its names and the module that
defines each (relative to the package, or absolute when it contains a dot and starts with a
top-level package); the module is imported on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Tuple


def lazy_exports(package: str, table: Dict[str, str]) -> Tuple[Callable[[str], object], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for a package whose names live in the modules named by ``table``."""

    def __getattr__(name: str):
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        absolute = module.split(".")[0] in ("processing", "datasets_scripts", "modeling_supreme")
        return getattr(importlib.import_module(module if absolute else f"{package}.{module}"), name)

    def __dir__() -> List[str]:
        return sorted(table)

    return __getattr__, __dir__
