"""The app bundle `flwr run` ships to the SuperLink and every SuperNode holds code only: never a
device's private data, credentials, results or stores that live beside the code."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from simulations.launcher import APP_DIR

PRIVATE = ("deploy/node-1/data/partition.json", "deploy/node-1/state/u1/run/seed-0/x.json",
           "docker/credentials/ca.key", "results/run/rows.jsonl", ".swapfl/devices/u1/a.json",
           "deploy/users.env")


def test_the_app_bundle_never_carries_private_files(tmp_path):
    tracked = subprocess.run(["git", "ls-files"], cwd=APP_DIR, capture_output=True, text=True,
                             check=True).stdout.split()
    app = tmp_path / "app"
    for name in tracked:  # the repository as a user has it: tracked files plus local data
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(APP_DIR / name, app / name)
    for name in PRIVATE:
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text('{"user": "private"}')
    flwr = Path(sys.executable).parent / "flwr"
    subprocess.run([str(flwr), "build", "--app", str(app)], cwd=tmp_path, check=True,
                   capture_output=True, text=True, timeout=120)
    (fab,) = tmp_path.glob("*.fab")
    names = zipfile.ZipFile(fab).namelist()
    assert "server/app.py" in names and "client/app.py" in names
    assert not [n for n in names if n in PRIVATE or n.startswith(("deploy/", "results/",
                                                                  ".swapfl/", "docker/cred"))]
