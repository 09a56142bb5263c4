"""Start-up of short commands: load their libraries at once, without the garbage collector's walks."""

from __future__ import annotations

import gc
import importlib


def preload(*modules: str) -> None:
    """Import ``modules`` (a command's start-up libraries) with the cyclic garbage collector paused,
    then freeze what they made.

    SQLAlchemy, pydantic and redis-py create ~75,000 objects that live as long as the process; with
    the collector running, ~180 collections walk them again and again while they load (50-80 ms,
    a tenth of `melanoma submit`'s start-up). Frozen, later collections skip them. Collection resumes
    afterwards (if it was on), so a long command (`submit --wait`) still frees its cycles.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
