"""The output dir a run owns: created writable (or a one-line error saying why not), and locked for the run's
lifetime, so that a second train.py on the same dir refuses instead of interleaving its files with the first's.

The lock is an flock on `<output dir>/.lock`: the kernel releases it when its process dies, however it dies, so a
SIGKILLed run leaves no lock that blocks its resume. The file also records the holder (pid, host, start time): a
second run names it when it refuses, and a run that takes over a lock whose holder died without releasing it warns.
flock works between processes of one machine; on a shared filesystem mounted by several machines it may not.
"""

import errno
import fcntl
import json
import logging
import os
import socket
import time

from math_llm.errors import ConfigError

LOCK_FILE = ".lock"
log = logging.getLogger(__name__)


def writable_dir(path, flag="--output-dir"):
    """Creates `path` if needed and checks that files can be written in it; a ConfigError in one line otherwise
    (a regular file in the way, a read-only filesystem, no permission), naming the `flag` that chose it, before any
    work is done."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{path}: this is a file, not a directory; choose another {flag}")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"{path}: cannot write there ({reason}); choose another {flag}") from None
    return path


class OutputDirLock:
    """`with OutputDirLock(output_dir):` holds the dir exclusively; a ConfigError naming the holder if another
    live process has it."""

    def __init__(self, output_dir):
        self.path = os.path.join(output_dir, LOCK_FILE)
        self.file = None

    def __enter__(self):
        file = open(self.path, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            file.close()
            if error.errno not in (errno.EAGAIN, errno.EACCES):  # a filesystem without flock (some NFS, Lustre)
                log.warning(f"{self.path}: this filesystem cannot lock files ({error.strerror}); running without "
                            f"a lock, so make sure no other run uses {os.path.dirname(self.path)}")
                return self
            raise ConfigError(f"{os.path.dirname(self.path)}: another run is using this output dir "
                              f"({describe(read_holder(self.path))}); wait for it to finish or stop it, or "
                              f"choose another --output-dir") from None
        previous = read_holder(self.path)
        if previous:  # a holder that released the lock would have emptied the file: it died holding it
            log.warning(f"{os.path.dirname(self.path)}: taking over the lock of a run that ended without releasing "
                        f"it ({describe(previous)})")
        file.seek(0)
        file.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}, file)
        file.flush()
        self.file = file
        return self

    def __exit__(self, *exc):
        if self.file is None:  # running without a lock
            return
        self.file.seek(0)
        self.file.truncate()  # released cleanly: the next run takes it over without a warning
        self.file.flush()
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def read_holder(path):
    """{pid, host, started} of the run that holds (or last held) the lock; {} when none is recorded."""
    try:
        with open(path) as f:
            holder = json.loads(f.read() or "{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def describe(holder):
    if not holder:
        return "holder unknown"
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
