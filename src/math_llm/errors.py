"""Errors caused by the user's input or files; scripts print them as one line instead of a traceback."""


class UserError(Exception):
    pass


class DataError(UserError, ValueError):
    """Bad data on disk; the message names the file and, where it can, the line."""


class CheckpointError(UserError):
    """A missing, truncated or incompatible checkpoint; the message names the file."""


class ConfigError(UserError, ValueError):
    """Flags that contradict each other or the run being resumed."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class PeerLost(UserError):
    """Another process of a torchrun job died or hung: this one cannot go on."""
