"""Console logging in colour (colorlog) and a plain-text log file with timestamps."""

import logging
import os

import colorlog

CONSOLE_FORMAT = "%(log_color)s%(asctime)s %(levelname)-7s%(reset)s %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(log_file=None, level=logging.INFO):
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = colorlog.StreamHandler()
    # Colour only on a terminal: log files and CI output stay free of escape codes.
    console.setFormatter(colorlog.ColoredFormatter(CONSOLE_FORMAT, datefmt="%H:%M:%S", stream=console.stream))
    root.addHandler(console)
    if log_file:
        log_to_file(log_file)
    # W&B and others log at INFO to the root logger; keep the console to our own messages.
    for noisy in ("wandb", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_to_file(log_file):
    """Sends the log to `log_file` (appending, with timestamps) instead of any file it went to before: a training run
    opens its log only once it holds its output dir, so a run refused there writes nothing into another's log."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()
    os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
    root.addHandler(file_handler)
