"""The settings of data-parallel training, read from MINIFM_DIST_* environment variables.

`mpiexec -n N minifm pretrain ...` runs data-parallel with no other change to the command, so the
knobs of the parallel machinery live outside the commands' flags, in the environment (as Horovod's
HOROVOD_FUSION_THRESHOLD or PyTorch's TORCH_NCCL_* do); mpiexec passes the environment on to every
rank (`mpiexec -genv NAME VALUE` sets one for all ranks explicitly):

    MINIFM_DIST_BUCKET_MB     25     gradients travel in buckets of about this many megabytes
                                     (PyTorch DDP's bucket_cap_mb)
    MINIFM_DIST_OVERLAP       1      1: a bucket is sent (non-blocking) as soon as all its gradients are
                                     ready, while backward goes on; 0: every bucket after backward
    MINIFM_DIST_ZERO          0      1: ZeRO stage 1, the optimizer state sharded across the ranks
    MINIFM_DIST_TIMEOUT       300    seconds a rank may wait in one collective before it stops every
                                     rank (a crashed or hung rank never leaves the others waiting forever)
    MINIFM_DIST_CHECK_EVERY   100    compare a checksum of the ranks' parameters every N steps (0: never)

A value that is not a number, or out of range, is an error naming the variable and the value seen.
Library code may also build `DistributedConfig(...)` itself and hand it to the training loop.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from minifm.config import ConfigBase, ConfigError

ENVIRONMENT_NAMES = {
    "bucket_cap_mb": "MINIFM_DIST_BUCKET_MB",
    "overlap": "MINIFM_DIST_OVERLAP",
    "zero_stage": "MINIFM_DIST_ZERO",
    "timeout_s": "MINIFM_DIST_TIMEOUT",
    "check_every": "MINIFM_DIST_CHECK_EVERY",
}
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass
class DistributedConfig(ConfigBase):
    """How the ranks of a data-parallel run share their work (see the module docstring)."""

    bucket_cap_mb: float = 25.0    # gradient bucket size in MB (PyTorch DDP's bucket_cap_mb)
    overlap: bool = True           # send each bucket during backward, as soon as its gradients are ready
    zero_stage: int = 0            # 0: full optimizer state on every rank | 1: ZeRO stage 1 (state sharded)
    timeout_s: float = 300.0       # longest wait in one collective before every rank is stopped
    check_every: int = 100         # steps between parameter checksum comparisons (0 = never)

    def validate(self) -> None:
        self.check_range("bucket_cap_mb", low=0, low_open=True)
        self.check_choice("zero_stage", (0, 1))
        self.check_range("timeout_s", low=0, low_open=True)
        self.check_range("check_every", low=0)

    @property
    def bucket_cap_bytes(self) -> int:
        return max(1, int(self.bucket_cap_mb * 1024 * 1024))

    @classmethod
    def from_environment(cls, environ=None) -> "DistributedConfig":
        """The defaults, overridden by the MINIFM_DIST_* variables that are set."""
        environ = os.environ if environ is None else environ
        values = {}
        for field, name in ENVIRONMENT_NAMES.items():
            text = environ.get(name, "").strip()
            if text:
                values[field] = _parse(name, text, type(getattr(cls, field)))
        try:
            return cls(**values)
        except ConfigError as error:
            variable = ENVIRONMENT_NAMES.get(error.field or "", "a MINIFM_DIST_ variable")
            raise ConfigError(f"{variable}: {error}", error.field) from None


def _parse(name: str, text: str, kind: type):
    """The text of environment variable `name` as a `kind` (bool, int or float), or a ConfigError."""
    if kind is bool:
        if text.lower() in TRUE_WORDS:
            return True
        if text.lower() in FALSE_WORDS:
            return False
        raise ConfigError(f"{name} must be one of {TRUE_WORDS + FALSE_WORDS}, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


__all__ = ["DistributedConfig", "ENVIRONMENT_NAMES"]
