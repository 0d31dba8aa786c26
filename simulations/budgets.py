"""Device budgets: a result row's measured work as seconds and joules on a named device.

A result row carries work that does not depend on the host that simulated it:
``forward-flops``, ``backward-flops``, ``solver-flops`` (2 FLOPs per multiply-add) and
``state-bytes``. A ``DeviceProfile`` turns that work into time and energy on one device. The
profiles ship in ``device_profiles.toml`` beside this module, with the source or derivation
of every figure; ``load_profiles(path)`` reads a user's own file of the same format.

The model is a roofline-style sum, with per-device sustained rates::

    forward seconds  = (forward-flops + solver-flops) / forward-flops-per-second
    backward seconds = backward-flops / backward-flops-per-second
    memory seconds   = 2 · state-bytes / memory-bandwidth-bytes-per-second
    device seconds   = forward + backward + memory seconds

    compute joules   = (forward + solver + backward FLOPs) / 1e9 · joules-per-gigaflop
    memory joules    = 2 · state-bytes / 1e9 · joules-per-gigabyte
    idle joules      = idle-watts · device seconds
    device joules    = compute + memory + idle joules

Energy follows the energy roofline of Choi et al. ("A roofline model of energy", IPDPS 2013):
a cost per FLOP, a cost per byte of DRAM traffic and a constant power for the duration.

Choices, and why:

- Solver FLOPs (Cholesky, triangular solves, Gram matrices) are dense BLAS-3 kernels, so they
  run at the forward (inference-like) rate.
- The state is read once before the fit and written once after it (hence 2 · state-bytes).
  That traffic does not overlap the compute, so the times are summed rather than taking the
  maximum as a classic roofline would. Everything else the fit streams (weights,
  activations) is already priced in the measured FLOP/s rates.
- ``joules-per-gigaflop`` is the whole device's power under load divided by its forward
  rate, so it already covers the DRAM traffic of the compute itself; ``joules-per-gigabyte``
  prices only the state traffic.

What the model ignores: tokenization and other preprocessing, disk and network I/O (the row's
uplink and downlink bytes are not priced here), thermal throttling (the profiles give
un-throttled sustained rates, so a phone that trains for minutes will be slower), frequency
scaling and the OS moving threads to little cores, accelerators (GPU, NPU), and the
simulation host's own overheads (Python, data loading: the row's ``fit-seconds`` is host
time and is not used). The profiles' figures are rounded estimates, good to within about a
factor of two; read the results as orders of magnitude.

Memory: ``fits_memory`` compares the row's ``peak-memory-bytes`` with the profile's
``memory-bytes``. That peak is the resident-memory growth during the fit on the simulation
host, which leaves out what was resident before it (the backbone's weights), so ``True``
means "the fit's own working set fits", a necessary but not sufficient condition.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PROFILES = Path(__file__).with_name("device_profiles.toml")
"""The shipped profiles (low-end phone, high-end phone, laptop, this host's one core)."""

ESTIMATE_METRICS: tuple[str, ...] = (
    "forward-seconds", "backward-seconds", "memory-seconds", "device-seconds",
    "compute-joules", "memory-joules", "idle-joules", "device-joules",
)
"""What ``DeviceProfile.estimate`` returns, in this order."""

GIGA = 1e9


class DeviceProfileError(ValueError):
    """A device-profile file cannot be read, or a profile in it is invalid."""


def _figure(help_text: str, *, may_be_zero: bool = False, **kwargs: Any) -> Any:
    return field(metadata={"help": help_text, "may_be_zero": may_be_zero}, **kwargs)


@dataclass(frozen=True)
class DeviceProfile:
    """One device's sustained rates and energy costs; the TOML keys are the field names with
    hyphens (``forward-flops-per-second``), and the TOML table's name is ``name``."""

    name: str
    description: str
    forward_flops_per_second: float = _figure(
        "sustained fp32 FLOP/s on inference-like dense work (2 FLOPs per multiply-add)")
    backward_flops_per_second: float = _figure(
        "sustained FLOP/s on the backward pass of training steps (below forward)")
    memory_bandwidth_bytes_per_second: float = _figure(
        "sustained DRAM bandwidth one app's threads reach")
    joules_per_gigaflop: float = _figure(
        "energy per 1e9 FLOPs while computing (device power under load / forward rate)")
    joules_per_gigabyte: float = _figure("energy per 1e9 bytes moved to or from DRAM")
    memory_bytes: float = _figure("RAM one app may realistically hold")
    idle_watts: float = _figure(
        "power drawn for the whole duration on top of the above (e.g. a screen kept on)",
        may_be_zero=True, default=0.0)

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.description, str) or not self.description.strip():
            problems.append(f"'description' must be a non-empty string, got {self.description!r}")
        for spec in _numeric_fields():
            value = getattr(self, spec.name)
            key = _key(spec.name)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value)):
                problems.append(f"{key!r} must be a finite number, got {value!r}")
            elif spec.metadata["may_be_zero"] and value < 0:
                problems.append(f"{key!r} must be zero or positive, got {value!r}")
            elif not spec.metadata["may_be_zero"] and value <= 0:
                problems.append(f"{key!r} must be positive, got {value!r}")
            else:
                object.__setattr__(self, spec.name, float(value))
        if problems:
            raise ValueError(f"profile [{self.name}]: " + "; ".join(problems))

    @classmethod
    def from_table(cls, name: str, table: Any) -> DeviceProfile:
        """Build from one TOML table with hyphenated keys; names every missing or unknown key."""
        if not isinstance(table, Mapping):
            raise ValueError(f"profile [{name}]: expected a table of keys, got {table!r}")
        keys = {_key(spec.name): spec for spec in dataclasses.fields(cls) if spec.name != "name"}
        unknown = sorted(set(table) - set(keys))
        missing = sorted(key for key, spec in keys.items() if _required(spec) and key not in table)
        problems = []
        if unknown:
            problems.append(f"unknown key(s) {unknown}; valid keys: {sorted(keys)}")
        if missing:
            problems.append(f"missing required key(s) {missing}")
        if problems:
            raise ValueError(f"profile [{name}]: " + "; ".join(problems))
        return cls(name=name, **{keys[key].name: value for key, value in table.items()})

    def estimate(self, row: Mapping[str, float]) -> dict[str, float]:
        """Seconds and joules of the row's work on this device (``ESTIMATE_METRICS``); a cost
        the row lacks counts as 0."""
        forward = _cost(row, "forward-flops") + _cost(row, "solver-flops")
        backward = _cost(row, "backward-flops")
        traffic = 2.0 * _cost(row, "state-bytes")
        seconds = {
            "forward-seconds": forward / self.forward_flops_per_second,
            "backward-seconds": backward / self.backward_flops_per_second,
            "memory-seconds": traffic / self.memory_bandwidth_bytes_per_second,
        }
        device_seconds = sum(seconds.values())
        joules = {
            "compute-joules": (forward + backward) / GIGA * self.joules_per_gigaflop,
            "memory-joules": traffic / GIGA * self.joules_per_gigabyte,
            "idle-joules": self.idle_watts * device_seconds,
        }
        return {**seconds, "device-seconds": device_seconds, **joules,
                "device-joules": sum(joules.values())}

    def fits_memory(self, row: Mapping[str, float]) -> bool | None:
        """Whether the row's ``peak-memory-bytes`` fits in ``memory_bytes``; None when the row
        has no peak (see the module docstring for what that peak leaves out)."""
        if row.get("peak-memory-bytes") is None:
            return None
        return _cost(row, "peak-memory-bytes") <= self.memory_bytes


def load_profiles(path: Path | str | None = None) -> dict[str, DeviceProfile]:
    """Every profile in a TOML file (default: ``DEFAULT_PROFILES``), by name.

    Raises ``DeviceProfileError`` naming the file and, for each bad profile, its table and keys.
    """
    path = DEFAULT_PROFILES if path is None else Path(path)
    try:
        with path.open("rb") as handle:
            tables = tomllib.load(handle)
    except FileNotFoundError:
        raise DeviceProfileError(f"{path}: no such device-profile file") from None
    except tomllib.TOMLDecodeError as err:
        raise DeviceProfileError(f"{path}: not valid TOML: {err}") from None
    profiles: dict[str, DeviceProfile] = {}
    problems = [] if tables else ["no profiles; expected one [name] table per device"]
    for name, table in tables.items():
        try:
            profiles[name] = DeviceProfile.from_table(name, table)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise DeviceProfileError(
            f"{path}: invalid device profiles:\n  " + "\n  ".join(problems)
            + f"\nSee {DEFAULT_PROFILES} for the keys, their units and an example of each.")
    return profiles


def _key(field_name: str) -> str:
    return field_name.replace("_", "-")


def _numeric_fields() -> list[dataclasses.Field]:
    return [spec for spec in dataclasses.fields(DeviceProfile)
            if spec.name not in ("name", "description")]


def _required(spec: dataclasses.Field) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def _cost(row: Mapping[str, float], key: str) -> float:
    value = row.get(key)
    if value is None:
        return 0.0
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"row's {key!r} must be a finite non-negative number, got {value!r}")
    return number
