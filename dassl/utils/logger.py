"""`setup_logger`: tee stdout into a log file (log.txt, or log.txt-<timestamp> when a log already exists)."""
import os
import os.path as osp
import sys
import time
from typing import Optional

from .tools import mkdir_if_missing


class Logger:
    """A stdout replacement that writes to the console and to `fpath` (fsync on flush, so a crash keeps the log)."""

    def __init__(self, fpath: Optional[str] = None) -> None:
        self.console = sys.stdout
        self.file = None
        if fpath is not None:
            mkdir_if_missing(osp.dirname(fpath) or ".")
            self.file = open(fpath, "w")

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, *args) -> None:
        self.close()

    def write(self, msg: str) -> None:
        self.console.write(msg)
        if self.file is not None:
            self.file.write(msg)

    def flush(self) -> None:
        self.console.flush()
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def isatty(self) -> bool:
        return self.console.isatty()

    def fileno(self) -> int:
        return self.console.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.console, "encoding", "utf-8")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def log_file_path(output: str) -> str:
    """The file a run writing to `output` logs into: `output` itself if it ends in .txt/.log, else
    `<output>/log.txt`; if that exists, the same name + `-YYYY-MM-DD-HH-MM-SS` (the old log is kept)."""
    fpath = output if output.endswith((".txt", ".log")) else osp.join(output, "log.txt")
    if osp.exists(fpath):
        fpath += time.strftime("-%Y-%m-%d-%H-%M-%S")
    return fpath


def setup_logger(output: Optional[str] = None) -> Optional[Logger]:
    """Replace sys.stdout with a Logger teeing into the log file of `output` (no-op for None). stderr (warnings,
    progress bars) is not captured, as in Dassl."""
    if output is None:
        return None
    if isinstance(sys.stdout, Logger):
        # a second call in one process (tests, notebooks) must not stack tees
        sys.stdout.close()
        sys.stdout = sys.stdout.console
    logger = Logger(log_file_path(output))
    sys.stdout = logger
    return logger
