"""Device profiles: the shipped file loads and is sane, the estimate matches a hand computation,
memory checks, and a bad or a user's own TOML file."""

from __future__ import annotations

import math

import pytest

from simulations.budgets import (
    DEFAULT_PROFILES,
    ESTIMATE_METRICS,
    DeviceProfile,
    DeviceProfileError,
    load_profiles,
)

ROUND_PROFILE = """
[round]
description = "round numbers for hand computation"
forward-flops-per-second = 1e9
backward-flops-per-second = 5e8
memory-bandwidth-bytes-per-second = 1e9
joules-per-gigaflop = 0.5
joules-per-gigabyte = 2.0
memory-bytes = 4e9
idle-watts = 1.0
"""


@pytest.fixture
def round_profile(tmp_path) -> DeviceProfile:
    path = tmp_path / "round.toml"
    path.write_text(ROUND_PROFILE)
    return load_profiles(path)["round"]


def test_shipped_profiles_load_with_positive_figures_and_descriptions():
    profiles = load_profiles()
    assert {"low-end-phone", "high-end-phone", "laptop", "this-host-1-core"} <= set(profiles)
    for name, profile in profiles.items():
        assert profile.name == name and profile.description.strip()
        assert min(profile.forward_flops_per_second, profile.backward_flops_per_second,
                   profile.memory_bandwidth_bytes_per_second, profile.joules_per_gigaflop,
                   profile.joules_per_gigabyte, profile.memory_bytes) > 0
        assert profile.backward_flops_per_second < profile.forward_flops_per_second
    assert load_profiles(DEFAULT_PROFILES) == profiles
    phones = profiles["low-end-phone"], profiles["high-end-phone"]
    assert phones[0].forward_flops_per_second < phones[1].forward_flops_per_second


def test_estimate_matches_a_hand_computation(round_profile):
    row = {"forward-flops": 2e9, "solver-flops": 1e9, "backward-flops": 1e9,
           "state-bytes": 5e8, "fit-seconds": 123.0}
    # forward (2 + 1 GFLOP) / 1 GFLOP/s = 3 s; backward 1 GFLOP / 0.5 = 2 s;
    # memory 2 · 0.5 GB / 1 GB/s = 1 s; total 6 s.
    # compute 4 GFLOP · 0.5 = 2 J; memory 1 GB · 2 = 2 J; idle 1 W · 6 s = 6 J; total 10 J.
    expected = {"forward-seconds": 3.0, "backward-seconds": 2.0, "memory-seconds": 1.0,
                "device-seconds": 6.0, "compute-joules": 2.0, "memory-joules": 2.0,
                "idle-joules": 6.0, "device-joules": 10.0}
    estimate = round_profile.estimate(row)
    assert tuple(estimate) == ESTIMATE_METRICS
    assert estimate == pytest.approx(expected)


def test_missing_costs_count_as_zero(round_profile):
    assert round_profile.estimate({}) == dict.fromkeys(ESTIMATE_METRICS, 0.0)
    only_backward = round_profile.estimate({"backward-flops": 1e9})
    assert only_backward == pytest.approx({
        "forward-seconds": 0.0, "backward-seconds": 2.0, "memory-seconds": 0.0,
        "device-seconds": 2.0, "compute-joules": 0.5, "memory-joules": 0.0,
        "idle-joules": 2.0, "device-joules": 2.5})


def test_a_negative_or_nan_cost_is_an_error(round_profile):
    with pytest.raises(ValueError, match="'backward-flops'"):
        round_profile.estimate({"backward-flops": -1.0})
    with pytest.raises(ValueError, match="'state-bytes'"):
        round_profile.estimate({"state-bytes": math.nan})


def test_fits_memory(round_profile):
    assert round_profile.fits_memory({"peak-memory-bytes": 1e9}) is True
    assert round_profile.fits_memory({"peak-memory-bytes": 4e9}) is True
    assert round_profile.fits_memory({"peak-memory-bytes": 5e9}) is False
    assert round_profile.fits_memory({"forward-flops": 1e9}) is None


@pytest.mark.parametrize(("edit", "expected"), [
    (("memory-bytes = 4e9\n", ""), r"\[round\]: missing required key\(s\) \['memory-bytes'\]"),
    (("joules-per-gigaflop = 0.5", "joules-per-gigaflop = -0.5"),
     r"\[round\]: 'joules-per-gigaflop' must be positive, got -0.5"),
    (("idle-watts = 1.0", "idle-watts = -1.0"),
     r"\[round\]: 'idle-watts' must be zero or positive"),
    (("memory-bytes = 4e9", "memory-bytes = true"),
     r"\[round\]: 'memory-bytes' must be a finite number, got True"),
    (("idle-watts = 1.0", "idle-watt = 1.0"), r"\[round\]: unknown key\(s\) \['idle-watt'\]"),
    (("description = \"round numbers for hand computation\"", "description = \"\""),
     r"\[round\]: 'description' must be a non-empty string"),
])
def test_a_bad_profile_names_the_file_the_profile_and_the_key(tmp_path, edit, expected):
    path = tmp_path / "mine.toml"
    old, new = edit
    assert old in ROUND_PROFILE
    path.write_text(ROUND_PROFILE.replace(old, new) + ROUND_PROFILE.replace("[round]", "[good]"))
    with pytest.raises(DeviceProfileError, match=expected) as error:
        load_profiles(path)
    assert str(path) in str(error.value) and "[good]" not in str(error.value)


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(DeviceProfileError, match="no such device-profile file"):
        load_profiles(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[phone\n")
    with pytest.raises(DeviceProfileError, match="broken.toml: not valid TOML"):
        load_profiles(broken)
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(DeviceProfileError, match="no profiles"):
        load_profiles(empty)
    scalar = tmp_path / "scalar.toml"
    scalar.write_text("phone = 3\n")
    with pytest.raises(DeviceProfileError, match=r"\[phone\]: expected a table"):
        load_profiles(scalar)


def test_a_users_own_file_loads_and_idle_watts_is_optional(tmp_path):
    path = tmp_path / "my-devices.toml"
    path.write_text("""
[my-tablet]
description = "my tablet, 2 threads"
forward-flops-per-second = 20_000_000_000
backward-flops-per-second = 1.5e10
memory-bandwidth-bytes-per-second = 1e10
joules-per-gigaflop = 0.1
joules-per-gigabyte = 0.1
memory-bytes = 2e9
""")
    profiles = load_profiles(str(path))
    tablet = profiles["my-tablet"]
    assert list(profiles) == ["my-tablet"] and tablet.idle_watts == 0.0
    assert isinstance(tablet.forward_flops_per_second, float)
    estimate = tablet.estimate({"forward-flops": 4e10})
    assert estimate["device-seconds"] == pytest.approx(2.0)
    assert estimate["device-joules"] == pytest.approx(4.0)
