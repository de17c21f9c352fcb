"""What every DVC stage's command line shares: expected errors become one clear line and exit status 1."""

from __future__ import annotations

import sys
from typing import Callable


def run_stage(stage: str, work: Callable[[], object], expected: tuple[type[BaseException], ...]) -> int:
    """Run ``work``; an ``expected`` error (bad settings, missing input, failed download) is printed as
    ``error: <stage>: <message>`` without a traceback, which stays for the unexpected ones."""
    try:
        work()
    except expected as error:
        print(f"error: {stage}: {error}", file=sys.stderr)
        return 1
    return 0
