"""Typed exceptions. Library code raises these; only the CLI turns them into exit codes."""


class TunewiseError(Exception):
    """A user-facing problem: the message says what is wrong and what to do instead."""

    exit_code = 2


class RecipeError(TunewiseError):
    """The recipe or a key=value override is invalid."""


class DataError(TunewiseError):
    """A data file cannot be read or holds invalid rows (the message names file:line and field)."""


class ModelError(TunewiseError):
    """A base model cannot be found or loaded safely."""


class RunDirError(TunewiseError):
    """The run directory is missing, incomplete or was modified."""


class VerifyError(RunDirError):
    """`tunewise verify` found artifacts that no longer match their recorded hash."""

    exit_code = 1


class DiskFullError(RunDirError):
    """A write failed because the disk (or quota) is full. The file being written was left as it was before,
    and so were the manifest and the previous checkpoints; free space and rerun (with --resume for training)."""


class AuditBlocked(TunewiseError):
    """The data audit found blocking problems that `audit.allow` does not accept; training does not start."""


class GateFailed(TunewiseError):
    """The release gate (gate/gate.json) failed: everything was written, but the evidence does not meet the
    recipe's `gate:` rules. Exit code 3, so CI pipelines can tell it from an error."""

    exit_code = 3
