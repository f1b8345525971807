"""`cnlab image build NAME`: a node image as a wheelhouse artifact, so devices need no registry.

The artifact is one tarball, `<out>/<name>-<version>.wheelhouse.tar.gz`, holding `wheelhouse/`
(the image's distribution and every dependency as wheels, from `pip wheel`, plus pip's own wheel,
which the device runs directly so its venv needs no ensurepip) and `artifact.json`
(name, version, distribution, wheels, source digest). A device installs it with
`python3 -m venv --without-pip V && V/bin/python wheelhouse/pip-*.whl/pip install --no-index
--find-links wheelhouse DISTRIBUTION==VERSION`. The build is skipped when an
artifact of the same version and source digest exists.

Wheels are built for the controller's Python and architecture (x86_64, CPython 3.11 here, as on
the Debian 12 devices); devices of another architecture or libc need wheels built there.
`local_version` ("0.1.0+rc2") makes a distinct version from the same source, which is how a
rolling upgrade is rehearsed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, RunError

REPO = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO / "node_images"
DEFAULT_OUT = REPO / "build" / "images"


@dataclass(frozen=True)
class Artifact:
    name: str
    version: str
    distribution: str
    path: str  # the tarball
    sha256: str
    source_digest: str
    wheels: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def _image(name: str, images_dir: Path) -> tuple[Path, dict[str, Any]]:
    d = images_dir / name
    path = d / "image.yaml"
    if not path.exists():
        known = sorted(p.name for p in images_dir.iterdir() if (p / "image.yaml").exists())
        raise InputError(
            f"no image {name!r} (known: {', '.join(known) or 'none'}; each is {images_dir}/<name>/image.yaml)"
        )
    return d, yaml.safe_load(path.read_text())


def source_digest(src: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if p.is_file() and not {"__pycache__", "build"} & set(rel.parts) and ".egg-info" not in str(rel):
            h.update(str(rel).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_artifact(path: str | Path) -> Artifact:
    """The artifact.json inside a built tarball."""
    p = Path(path)
    try:
        with tarfile.open(p) as tar:
            member = tar.extractfile("artifact.json")
            assert member is not None
            meta = json.loads(member.read())
    except (OSError, KeyError, tarfile.TarError, AssertionError) as e:
        raise InputError(f"{p}: not an image artifact built by `cnlab image build` ({e})") from None
    return Artifact(
        name=meta["name"],
        version=meta["version"],
        distribution=meta["distribution"],
        path=str(p),
        sha256=_sha256(p),
        source_digest=meta["source_digest"],
        wheels=tuple(meta["wheels"]),
    )


def build(
    name: str,
    *,
    out_dir: Path = DEFAULT_OUT,
    local_version: str | None = None,
    images_dir: Path = IMAGES_DIR,
    force: bool = False,
) -> Artifact:
    image_dir, manifest = _image(name, images_dir)
    pkg = manifest.get("package") or {}
    dist = pkg.get("distribution")
    if not dist:
        raise InputError(f"{image_dir}/image.yaml: package.distribution is missing")
    src = (images_dir.parent / pkg["path"]) if pkg.get("path") else image_dir
    version = str(manifest["version"])
    if local_version:
        if not re.fullmatch(r"[a-z0-9]+(\.[a-z0-9]+)*", local_version):
            raise InputError(f"--local-version {local_version!r}: use letters, digits and dots (PEP 440)")
        version = f"{version}+{local_version}"
    digest = source_digest(src)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}-{version}.wheelhouse.tar.gz"
    if target.exists() and not force:
        existing = read_artifact(target)
        if existing.source_digest == digest:
            return existing
    with tempfile.TemporaryDirectory(prefix=f"cnlab-image-{name}-") as tmp:
        work = Path(tmp)
        # a copy: setuptools leaves build/ and egg-info behind in the tree it builds
        build_src = work / "src"
        shutil.copytree(src, build_src, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build"))
        if local_version:  # the same source under a distinct version
            init = next(build_src.glob("*/__init__.py"))
            text = init.read_text()
            text, n = re.subn(r'__version__ = "[^"]*"', f'__version__ = "{version}"', text)
            if n != 1:
                raise RunError(f"{init}: no __version__ to rewrite for --local-version")
            init.write_text(text)
        wh = work / "wheelhouse"
        cp = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--disable-pip-version-check",
                "--wheel-dir",
                str(wh),
                str(build_src),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        if cp.returncode != 0:
            tail = " | ".join((cp.stderr or cp.stdout).strip().splitlines()[-8:])
            raise RunError(f"pip wheel of image {name} failed (exit {cp.returncode}): {tail}")
        # pip itself, run from its wheel on the device: a venv without ensurepip is seconds faster
        cp = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--dest",
                str(wh),
                "pip",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if cp.returncode != 0:
            tail = " | ".join((cp.stderr or cp.stdout).strip().splitlines()[-8:])
            raise RunError(f"pip download pip failed (exit {cp.returncode}): {tail}")
        wheels = tuple(sorted(p.name for p in wh.glob("*.whl")))
        meta = {
            "name": name,
            "version": version,
            "distribution": dist,
            "source_digest": digest,
            "wheels": list(wheels),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        }
        (work / "artifact.json").write_text(json.dumps(meta, indent=1) + "\n")
        partial = target.with_suffix(".tmp")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(work / "artifact.json", arcname="artifact.json")
            tar.add(wh, arcname="wheelhouse")
        partial.replace(target)
    return read_artifact(target)
