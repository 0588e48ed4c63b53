"""Progress of everything that takes more than a moment, one way everywhere.

On a terminal a live bar (tqdm); when stderr goes to a file or a pipe, plain lines a log can keep: one
every `every_s` seconds, and one at the end if any was written (work shorter than that stays silent). `note()` prints a line that is always kept
(epoch summaries, phase changes such as "dns: surgery 3/4") without breaking a live bar.

Example:
    >>> with Progress(total=len(loader), desc="evaluate", unit="batch") as bar:
    ...     for batch in loader:
    ...         ...
    ...         bar.update()
"""
from __future__ import annotations

import sys
import time

EVERY_S = 5.0  # seconds between the plain lines of a log


def is_terminal() -> bool:
    return sys.stderr.isatty()


def note(msg: str) -> None:
    """One line on stderr, above any live bar."""
    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stderr)
    sys.stderr.flush()


class Progress:
    """A bar on a terminal, periodic lines in a log; `enabled=False` shows nothing."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", *, initial: int = 0,
                 enabled: bool = True, every_s: float | None = None, leave: bool = True):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.enabled, self.every_s, self.postfix = enabled, EVERY_S if every_s is None else every_s, ""
        self._bar, self._lines = None, 0
        self._t0 = self._last = time.monotonic()
        if not enabled:
            return
        if is_terminal():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=leave,
                             file=sys.stderr)

    def _line(self, what: str = "") -> None:
        of = f"/{self.total}" if self.total else ""
        elapsed = time.monotonic() - self._t0
        self._lines += 1
        note(f"{self.desc}: {self.n}{of} {self.unit} {what}({elapsed:.0f} s){self.postfix}".replace("  ", " "))

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self._line()

    def set_postfix(self, **values) -> None:
        self.postfix = "; " + ", ".join(f"{k} {v}" for k, v in values.items()) if values else ""
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled:
            self.enabled = False
            if self._lines:
                self._line("done ")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
