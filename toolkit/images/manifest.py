"""A typed view of a node image's `image.yaml`: what the deployers need to know about an image.

    m = load_manifest("p2pvalue")            # or a path to a directory or an image.yaml
    m.ports["client"].default                # 8080
    m.health_port, m.health_path             # "client", "/health"
    m.render_config(values) -> str           # the image's own renderer (config.render)
    m.ensure_key(path) -> str                # create the node key if missing; its public key (keys.ensure)

In-process hooks (`config.render`, `keys.ensure`, `launch.*`) are dotted names of functions in the
image's Python package, imported on first use; the deployer calls them and knows nothing else of
the image. A second image works by shipping its own image.yaml with the same fields.

The config values every image's renderer receives (the deployer's side of the contract):
`domain`, `listen.<port name>.{host,port}`, `data_dir`, `signing_key`, `admin_token_file`,
`trusted_peers: [{domain, address, public_key}]`, `limits`, and the federation's `settings`
(each a top-level key of its own, e.g. p2pvalue's `federation`, `storage`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InputError, Problem
from ..yamlsource import load_file

IMAGES_DIR = Path(__file__).resolve().parents[2] / "node_images"


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Port(_Loose):
    default: int = Field(ge=1, le=65535)
    protocol: str = "http"
    plane: Literal["data", "management"] = "data"
    description: str = ""


class _Probe(_Loose):
    port: str
    path: str


class _Config(_Loose):
    render: str
    check: list[str] = []


class _Keys(_Loose):
    ensure: str | None = None
    generate: list[str] = []


class _Start(_Loose):
    command: list[str]
    stop_signal: str = "SIGTERM"


class _Launch(_Loose):
    preload: list[str] = []
    serve: str
    start: str | None = None
    load_config: str


class _Manifest(_Loose):
    name: str
    version: str
    description: str = ""
    ports: dict[str, _Port]
    health: _Probe
    metrics: _Probe
    config: _Config
    keys: _Keys = _Keys()
    start: _Start
    launch: _Launch | None = None


@dataclass(frozen=True)
class PortSpec:
    name: str
    default: int
    plane: Literal["data", "management"]
    protocol: str = "http"


def import_object(dotted: str) -> Any:
    """`package.module.attr` -> the object."""
    module, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise InputError(f"image hook {dotted!r} cannot be imported: {e}") from e


@dataclass(frozen=True)
class ImageManifest:
    name: str
    version: str
    dir: Path
    ports: dict[str, PortSpec]
    health_port: str
    health_path: str
    metrics_port: str
    metrics_path: str
    render_hook: str  # dotted name: (values: dict) -> config text
    key_hook: str | None  # dotted name: (path) -> public key b64, creating the key if missing
    start_command: list[str]  # argv template with {{ config_dir }} (process-per-node deployers)
    launch_preload: tuple[str, ...] = ()
    serve_hook: str | None = None  # async (config) -> None: serve until SIGTERM (fork launcher)
    start_hook: str | None = None  # async (config, *, sockets, connector) -> handle with async stop()
    load_config_hook: str | None = None  # (path) -> config object for serve/start
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    # ---- the in-process hooks ----------------------------------------------------------------
    def render_config(self, values: dict[str, Any], *, check: bool = True) -> str:
        """The hook's contract: `render(values, *, check=True) -> text`; check=False may skip
        validating the result (the node validates its config when it starts)."""
        return str(import_object(self.render_hook)(values, check=check))

    def ensure_key(self, path: str | Path) -> str:
        if not self.key_hook:
            raise InputError(f"image {self.name}: image.yaml has no keys.ensure hook")
        return str(import_object(self.key_hook)(Path(path)))

    def port(self, name: str) -> PortSpec:
        try:
            return self.ports[name]
        except KeyError:
            raise InputError(f"image {self.name} has no port {name!r} (ports: {', '.join(self.ports)})") from None


def _find(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    if p.is_dir() and (p / "image.yaml").is_file():
        return p / "image.yaml"
    if isinstance(name_or_path, str) and "/" not in name_or_path:
        candidate = IMAGES_DIR / name_or_path / "image.yaml"
        if candidate.is_file():
            return candidate
        known = (
            sorted(d.name for d in IMAGES_DIR.iterdir() if (d / "image.yaml").is_file()) if IMAGES_DIR.is_dir() else []
        )
        raise InputError(f"no node image {name_or_path!r} in {IMAGES_DIR} (images: {', '.join(known) or 'none'})")
    raise InputError(f"{name_or_path}: not an image directory or image.yaml")


def load_manifest(name_or_path: str | Path) -> ImageManifest:
    """Read and check node_images/<name>/image.yaml (or a given directory or file)."""
    path = _find(name_or_path)
    doc = load_file(path)
    if doc.problems:
        raise InputError(doc.problems)
    try:
        m = _Manifest.model_validate(doc.data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
            problems.append(doc.problem(loc, f"{'.'.join(map(str, loc)) or 'image'}: {err['msg']}"))
        raise InputError(problems) from None
    bad = (
        [Problem(str(path), *doc.position(("health", "port")), f"health.port: no port {m.health.port!r}")]
        if m.health.port not in m.ports
        else []
    )
    if m.metrics.port not in m.ports:
        bad.append(Problem(str(path), *doc.position(("metrics", "port")), f"metrics.port: no port {m.metrics.port!r}"))
    if bad:
        raise InputError(bad)
    return ImageManifest(
        name=m.name,
        version=m.version,
        dir=path.parent,
        ports={n: PortSpec(n, p.default, p.plane, p.protocol) for n, p in m.ports.items()},
        health_port=m.health.port,
        health_path=m.health.path,
        metrics_port=m.metrics.port,
        metrics_path=m.metrics.path,
        render_hook=m.config.render,
        key_hook=m.keys.ensure,
        start_command=list(m.start.command),
        launch_preload=tuple(m.launch.preload) if m.launch else (),
        serve_hook=m.launch.serve if m.launch else None,
        start_hook=m.launch.start if m.launch else None,
        load_config_hook=m.launch.load_config if m.launch else None,
        raw=doc.data,
    )


Hook = Callable[..., Any]
