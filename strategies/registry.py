"""Strategies by name. Registration fills the table; nothing dispatches on names.

``@register("fala", config=FalaConfig)`` registers a class; ``register_variant`` registers a
named preset of another strategy's options (an ablation such as ``fala-all-examples``), so it
shows up in results under its own name and is covered by the conformance suite.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from strategies.base import LocalStrategy, StrategyConfig


@dataclass(frozen=True)
class _Entry:
    cls: type[LocalStrategy]
    preset: dict[str, Any] = field(default_factory=dict)
    help: str = ""


_REGISTRY: dict[str, _Entry] = {}
TRACK_NAME = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
"""What a track may be called: its name prefixes its metrics on the uplink."""


def register(
    name: str, config: type[StrategyConfig] = StrategyConfig
) -> Callable[[type[LocalStrategy]], type[LocalStrategy]]:
    """Class decorator: make a strategy available under ``name``."""

    def decorate(cls: type[LocalStrategy]) -> type[LocalStrategy]:
        if name in _REGISTRY:
            raise ValueError(f"strategy {name!r} is already registered")
        cls.name, cls.config_class = name, config
        _REGISTRY[name] = _Entry(cls, help=(cls.__doc__ or "").strip().splitlines()[0])
        return cls

    return decorate


def register_variant(name: str, base: str, help: str = "", **preset: Any) -> None:
    """Register ``name`` as ``base`` with some options fixed (validated now, not at run time)."""
    if name in _REGISTRY:
        raise ValueError(f"strategy {name!r} is already registered")
    entry = _REGISTRY[base]
    entry.cls.config_class(**{**entry.preset, **preset})
    _REGISTRY[name] = _Entry(entry.cls, {**entry.preset, **preset}, help)


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def lineage(name: str) -> str:
    """The registered class a strategy or variant runs (``fala-kmeans`` -> ``fala``): what
    reports group ablations by, read from the registry instead of from the name."""
    _load_builtin()
    try:
        return _REGISTRY[name].cls.name
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; registered: {names()}") from None


def describe() -> dict[str, str]:
    _load_builtin()
    return {name: _REGISTRY[name].help for name in sorted(_REGISTRY)}


def extra_metrics() -> tuple[str, ...]:
    """The extra metric names every registered strategy declares (sorted, unique)."""
    _load_builtin()
    return tuple(sorted({m for entry in _REGISTRY.values() for m in entry.cls.extra_metrics}))


def create(name: str, options: dict[str, Any] | None = None) -> LocalStrategy:
    """Instantiate a registered strategy with its preset plus ``options`` (strings allowed)."""
    _load_builtin()
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; registered: {names()}") from None
    config = entry.cls.config_class.from_options({**entry.preset, **(options or {})})
    strategy = entry.cls(config)
    strategy.name = name  # variants report under their own name
    return strategy


def _load_builtin() -> None:
    """Make sure the package (which imports every strategy module) has been imported."""
    import strategies  # noqa: F401


def parse_options(text: str) -> dict[str, dict[str, str]]:
    """Parse ``"fala.lam=0.05 top.epochs=3"`` into ``{"fala": {"lam": "0.05"}, ...}``."""
    options: dict[str, dict[str, str]] = {}
    for item in text.split():
        target, sep, value = item.partition("=")
        name, dot, key = target.partition(".")
        if not (sep and dot and name and key):
            raise ValueError(
                f"strategy option {item!r} must look like <strategy>.<option>=<value>, "
                "e.g. fala.lam=0.05"
            )
        options.setdefault(name, {})[key] = value
    return options


def parse_tracks(names_text: str) -> dict[str, str]:
    """``"global fala ce=fala"`` -> ``{"global": "global", "fala": "fala", "ce": "fala"}``:
    each compared track and the registered strategy it runs. ``alias=strategy`` compares one
    strategy under several option sets in one run (options address the alias: ``ce.objective=
    ce-labels``)."""
    tracks: dict[str, str] = {}
    for item in names_text.replace(",", " ").split():
        alias, sep, base = item.partition("=")
        if sep and not (alias and base):
            raise ValueError(f"track {item!r} must be 'strategy' or 'alias=strategy'")
        if not TRACK_NAME.match(alias):
            raise ValueError(f"track name {alias!r} must match [a-z0-9][a-z0-9-]* (it names "
                             "the track's metrics on the uplink)")
        if alias in tracks:
            raise ValueError(f"track {alias!r} listed twice in {names_text!r}")
        tracks[alias] = base if sep else alias
    if not tracks:
        raise ValueError("no strategy selected; e.g. strategies = \"global top fala\"")
    return tracks


def create_many(names_text: str, options_text: str = "") -> dict[str, LocalStrategy]:
    """The compared tracks of a run (space/comma separated; ``alias=strategy`` runs a
    registered strategy under another track name) with their options, by track name."""
    tracks = parse_tracks(names_text)
    options = parse_options(options_text)
    unknown = set(options) - set(tracks)
    if unknown:
        raise ValueError(f"options given for strategies not in the run: {sorted(unknown)}")
    created = {}
    for track, base in tracks.items():
        strategy = create(base, options.get(track))
        strategy.name = track
        created[track] = strategy
    return created
