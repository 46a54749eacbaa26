"""Progress of long work, reported to whoever listens (the CLI draws a bar on a terminal).

A process-wide listener rather than a parameter: Prefect tasks run in worker threads and their
arguments are recorded, so a callback cannot travel through them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

ProgressListener = Callable[[str, int, int], None]

_lock = threading.Lock()
_listener: ProgressListener | None = None


def set_progress_listener(listener: ProgressListener | None) -> None:
    global _listener
    with _lock:
        _listener = listener


def report_progress(stage: str, done: int, total: int) -> None:
    listener = _listener
    if listener is not None:
        listener(stage, done, total)
