"""Releases are content-addressed, reused, and verified by hash before a device uses them."""

from __future__ import annotations

import shutil

import pytest

from server.releases import build_or_load_release, public_data_sha256, release_id
from tasks.release import ReleaseIntegrityError, open_release


def test_same_config_gives_same_release_and_reuses_it(tiny_settings, world, releases, caplog):
    folder, manifests = releases
    entry = tiny_settings.schedule[0]
    assert release_id(entry, tiny_settings, public_data_sha256(world)) == manifests[0].release_id
    again = build_or_load_release(entry, tiny_settings, world, folder)
    assert again == manifests[0]
    other = tiny_settings.__class__(**{**tiny_settings.__dict__, "seed": 1})
    assert release_id(entry, other, public_data_sha256(world)) != manifests[0].release_id


def test_tampered_head_is_refused(releases, tmp_path):
    folder, manifests = releases
    copy = tmp_path / "releases"
    shutil.copytree(folder / manifests[0].release_id, copy / manifests[0].release_id)
    head = copy / manifests[0].release_id / manifests[0].head["file"]
    data = bytearray(head.read_bytes())
    data[-1] ^= 1
    head.write_bytes(bytes(data))
    with pytest.raises(ReleaseIntegrityError, match="sha256 differs"):
        open_release(copy, manifests[0].release_id)


def test_downlink_counts_backbone_and_head(releases):
    _, manifests = releases
    for manifest in manifests:
        assert manifest.downlink_bytes > manifest.head["bytes"] > 0
