"""Progress a person reads in a console or a log: durations at a glance and a training run's periodic line.

Used by ``stylecore train`` when its output is not a terminal (a log file, CI) and by the pipeline's Ray Train
stages, where a redrawn bar would be thousands of carriage returns."""

from __future__ import annotations

from typing import Callable


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 4 min``: what a person reads at a glance."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class TrainingProgress:
    """Rank 0's progress line, at most one every ``every_s`` seconds: step / total, samples/s, loss and the time
    left at the rate since the first step. The per-report figures go to MLflow; this is for a person watching a
    long run (the full profile's 160,000 steps) in the console."""

    def __init__(self, label: str, total: int, every_s: float, clock=None) -> None:
        import time

        self.label, self.total, self.every_s = label, total, every_s
        self.clock = clock or time.monotonic
        self.started = self.last = None
        self.first_step = 0

    def line(self, step: int, samples_per_second: float, loss: "float | Callable[[], float]") -> str | None:
        """The line to print after ``step``, or None when the last one is fresher than ``every_s``. ``loss`` may be
        a callable, called only when a line is due (reading a loss makes the host wait for the accelerator)."""
        now = self.clock()
        if self.started is None:
            self.started, self.last, self.first_step = now, now, step
            return None
        if now - self.last < self.every_s or step >= self.total:
            return None
        self.last = now
        rate = (step - self.first_step) / max(now - self.started, 1e-9)  # steps/s, resumes counted from their start
        left = (self.total - step) / rate if rate > 0 else float("inf")
        eta = format_duration(left) if left != float("inf") else "unknown"
        loss = loss() if callable(loss) else loss
        return (f"{self.label}: step {step}/{self.total} ({100 * step / self.total:.0f} %), "
                f"{samples_per_second:.1f} samples/s, loss {loss:.4g}, {eta} left")
