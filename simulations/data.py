"""World setup for a simulation: the (synthetic or real) MIND data split into public/ and users/.

The split is the data owner's step, done once per data configuration and cached under
``<work-dir>/data/<key>``. After it, the server reads only ``public/`` and each device only its
own ``users/<id>/`` (plus the public article catalogue).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from simulations.synthetic import SyntheticNewsConfig, generate_mind
from tasks.news import partition_mind

log = logging.getLogger(__name__)


def synthetic_config(users: int, seed: int, articles: int, public_users: int,
                     impressions: int) -> SyntheticNewsConfig:
    return SyntheticNewsConfig(
        seed=seed, n_articles=articles, n_public_users=public_users,
        n_private_users=users, private_impressions=impressions,
    )


def prepare_dataset(work_dir: Path, source: str, users: int,
                    synthetic: SyntheticNewsConfig | None = None) -> Path:
    """Return the partitioned data folder, creating it (atomically) if it does not exist."""
    if source == "synthetic":
        if synthetic is None:
            raise ValueError("data-source 'synthetic' needs the synthetic generator settings")
        described = {"source": "synthetic", "users": users, **asdict(synthetic)}
    else:
        src = Path(source).expanduser().resolve()
        if not (src / "news.tsv").is_file() or not (src / "behaviors.tsv").is_file():
            raise FileNotFoundError(
                f"data-source {src} must be a folder with MIND news.tsv and behaviors.tsv "
                "(or 'synthetic')"
            )
        stat = [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                for p in (src / "news.tsv", src / "behaviors.tsv")]
        described = {"source": str(src), "users": users, "files": stat}
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    target = Path(work_dir) / "data" / key
    if (target / "partition.json").is_file():
        log.info("data: reusing prepared partitions %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}-"))
    try:
        if source == "synthetic":
            log.info("data: generating the synthetic MIND world (%s)", described)
            raw = generate_mind(staging / "mind", synthetic)
        else:
            raw = Path(described["source"])
        partition_mind(raw, staging / "split", users)
        (staging / "split" / "world.json").write_text(json.dumps(described, indent=2))
        try:
            (staging / "split").rename(target)
        except OSError:  # another process prepared it first: keep theirs
            if not (target / "partition.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("data: prepared %s", target)
    return target
