"""Compose params.yaml from conf/ exactly as `dvc exp run` does (DVC's Hydra integration).

`dvc exp run -S profile=paper` composes conf/ itself; `dvc repro` does not compose and
reads the committed params.yaml. This module writes that committed file (the `local`
profile) with DVC's own composition function, so the two never drift; a test checks it.

    python -m specdraft.params compose --out params.yaml [override ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose_text(overrides: list[str] | None = None, conf_dir: Path | None = None) -> str:
    """The params.yaml text that DVC would write for these Hydra overrides."""
    from dvc.utils.hydra import compose_and_dump
    from hydra.core.global_hydra import GlobalHydra

    conf_dir = (conf_dir or ROOT / "conf").resolve()
    GlobalHydra.instance().clear()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        compose_and_dump(out, str(conf_dir), None, "config", str(ROOT), overrides or [])
        return out.read_text(encoding="utf-8")


def compose(overrides: list[str] | None = None, conf_dir: Path | None = None) -> dict[str, Any]:
    """The params dict that DVC would write for these Hydra overrides."""
    return yaml.safe_load(compose_text(overrides, conf_dir))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["compose"])
    p.add_argument("--out", default="params.yaml")
    p.add_argument("overrides", nargs="*")
    a = p.parse_intermixed_args()
    from specdraft.io import write_text

    write_text(a.out, compose_text(a.overrides))


if __name__ == "__main__":
    main()
