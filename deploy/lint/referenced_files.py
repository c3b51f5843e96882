"""Fail when docker-compose.yml or a Dockerfile names a file that is not in the repository.

`docker compose config` parses and resolves the compose file but does not look at the
build context, the Dockerfile or the files a Dockerfile copies: those are only read by
`docker compose build`, which needs a Docker engine. This script reads the resolved
configuration that `docker compose config --format json` prints (on standard input) and
checks every path in it, and every local source of each Dockerfile's COPY/ADD, so a
renamed file breaks `make lint` instead of a user's first build.

Usage: docker-compose config --format json | python referenced_files.py
"""

from __future__ import annotations

import glob
import json
import shlex
import sys
from pathlib import Path
from typing import Any


def dockerfile_sources(dockerfile: Path) -> list[str]:
    """The local paths a Dockerfile's COPY and ADD read from the build context."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    sources: list[str] = []
    for raw in text.splitlines():
        if raw.split(maxsplit=1)[:1] not in (["COPY"], ["ADD"], ["copy"], ["add"]):
            continue
        words = shlex.split(raw)
        flags = [w for w in words[1:] if w.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue  # copies from another stage or image, not from the context
        paths = [w for w in words[1:] if not w.startswith("--")]
        sources.extend(p for p in paths[:-1] if "://" not in p)
    return sources


def problems(config: dict[str, Any]) -> list[str]:
    """Every referenced path that does not exist, as one readable line each."""
    found: list[str] = []
    for name, service in sorted(config.get("services", {}).items()):
        build = service.get("build")
        if build:
            context = Path(build["context"])
            if not context.is_dir():
                found.append(f"service {name}: build context {context} is not a directory")
                continue
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                found.append(f"service {name}: Dockerfile {dockerfile} does not exist")
                continue
            for source in dockerfile_sources(dockerfile):
                if not glob.glob(str(context / source)):
                    found.append(f"{dockerfile}: COPY source {source} does not exist")
        for volume in service.get("volumes", []):
            if volume.get("type") == "bind" and not Path(volume["source"]).exists():
                found.append(f"service {name}: bind mount {volume['source']} does not exist")
        for env_file in service.get("env_file", []):
            path = env_file["path"] if isinstance(env_file, dict) else env_file
            if not Path(path).is_file():
                found.append(f"service {name}: env_file {path} does not exist")
    for section in ("configs", "secrets"):
        for name, item in sorted(config.get(section, {}).items()):
            if "file" in item and not Path(item["file"]).exists():
                found.append(f"{section} {name}: file {item['file']} does not exist")
    return found


def main() -> int:
    """Read the resolved compose configuration and report missing files."""
    found = problems(json.load(sys.stdin))
    for line in dict.fromkeys(found):
        print(f"docker-compose.yml: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
