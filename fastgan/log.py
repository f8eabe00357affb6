"""fastgan's one-line notes to the person training (how a model was adapted, which path runs): the ``fastgan``
logger, INFO and above to stderr as ``fastgan: ...`` unless the application gives the logger handlers of its
own (``logging.getLogger("fastgan")``: set its level to WARNING to silence the notes)."""
from __future__ import annotations

import logging
import sys

__all__ = ["say", "logger"]


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a note is said (a redirected or captured stream too)."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)


logger = logging.getLogger("fastgan")
if not logger.handlers:
    _handler = _Stderr()
    _handler.setFormatter(logging.Formatter("fastgan: %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False   # (one line, not a second copy through the root logger's handlers)


def say(message: str) -> None:
    """Tell the person training ``message`` (one line)."""
    logger.info(message)
