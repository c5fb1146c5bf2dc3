"""A one-line progress bar on stderr, redrawn in place; no dependency, silent when not a tty."""

import sys
import time


class Progress:
    def __init__(self, stream=sys.stderr, width: int = 28):
        self.stream, self.width = stream, width
        self.title = ""
        self.tty = stream.isatty()
        self.last_draw = 0.0

    def begin(self, title: str) -> None:
        self.title = title
        if not self.tty:
            print(f"  {title} ...", file=self.stream, flush=True)

    def update(self, phase: str, done: float, total: float) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if now - self.last_draw < 0.1:
            return
        self.last_draw = now
        frac = 0.0 if not total else max(0.0, min(1.0, done / total))
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r\x1b[2K  {self.title[:48]:48} [{bar}] {frac * 100:5.1f}% {phase}")
        self.stream.flush()

    def end(self, note: str) -> None:
        if self.tty:
            self.stream.write(f"\r\x1b[2K")
        print(f"  {self.title[:48]:48} {note}", file=self.stream, flush=True)
