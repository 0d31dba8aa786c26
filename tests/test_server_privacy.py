"""The server trains on public data only: no server code path opens a private partition."""

from __future__ import annotations

import sys
from pathlib import Path

from server.releases import build_or_load_release

_OPENED: list[str] | None = None


def _record_open(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0]))


sys.addaudithook(_record_open)  # audit hooks cannot be removed; it records only when armed


def test_release_training_reads_public_partition_only(tiny_settings, world, tmp_path):
    global _OPENED
    _OPENED = []
    try:
        manifest = build_or_load_release(tiny_settings.schedule[0], tiny_settings, world,
                                         tmp_path / "releases")
    finally:
        opened, _OPENED = _OPENED, None
    assert manifest.training["public-valid"]["auc"] > 0.5  # it really trained on something
    resolved = {str(Path(p).resolve()) for p in opened}
    assert str((world / "public" / "behaviors.tsv").resolve()) in resolved
    private_root = str((world / "users").resolve())
    leaked = sorted(p for p in resolved if p.startswith(private_root))
    assert not leaked, f"server opened private files: {leaked}"
