"""Node configuration: the schema (validation.Record), the Jinja2 renderer and a loader with clear errors."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .validation import F, Record, ValidationFailed


def _template_dir() -> Path:
    # a checkout keeps the templates beside the package (node_images/p2pvalue/templates); an installed
    # wheel carries them as the p2pvalue_node.templates package data
    beside = Path(__file__).resolve().parent.parent / "templates"
    if (beside / "node.yaml.j2").is_file():
        return beside
    return Path(__file__).resolve().parent / "templates"


TEMPLATE_DIR = _template_dir()
CONFIG_TEMPLATE = "node.yaml.j2"

_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the file and the field."""

    def __init__(self, message: str, source: str = "<config>", field: str | None = None) -> None:
        self.source = source
        self.field = field
        where = f"{source}: {field}: " if field else f"{source}: "
        super().__init__(where + message)


def _metrics_not_wildcard(v: ListenAddress) -> ListenAddress:
    import ipaddress
    import socket

    host = v.host
    if host != host.strip() or not host:
        raise ValueError("a host without surrounding spaces is allowed")
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        try:  # what the socket layer accepts too: "0", "0x0", "127.1"
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            ip = None  # a host name
    if ip is not None and ip.is_unspecified:
        raise ValueError("metrics must listen on the management address, not a wildcard address")
    return v


def _domain_check(example: str) -> Any:
    def check(v: str) -> str:
        if not _DOMAIN_RE.match(v):
            raise ValueError(f"a lower-case DNS-style name such as {example} is allowed")
        return v

    return check


def _address(v: str) -> str:
    if not re.match(r"^https?://[^/\s]+$", v):
        raise ValueError("an http(s)://host:port base URL without a path is allowed")
    return v


def _public_key(v: str) -> str:
    import base64
    import binascii

    try:
        raw = base64.b64decode(v, validate=True)
    except binascii.Error:
        raise ValueError("base64 of a 32-byte ed25519 public key is allowed") from None
    if len(raw) != 32:
        raise ValueError("base64 of a 32-byte ed25519 public key is allowed")
    return v


class ListenAddress(Record):
    host: str
    port: int
    FIELDS: ClassVar[dict[str, F]] = {"host": F("str", min_length=1), "port": F("int", ge=0, le=65535)}


class Listen(Record):
    client: ListenAddress
    federation: ListenAddress
    metrics: ListenAddress
    FIELDS: ClassVar[dict[str, F]] = {
        "client": F(ListenAddress),
        "federation": F(ListenAddress),
        "metrics": F(ListenAddress, check=_metrics_not_wildcard),
    }


class TrustedPeer(Record):
    domain: str
    address: str
    public_key: str
    FIELDS: ClassVar[dict[str, F]] = {
        "domain": F("str", check=_domain_check("n2.ffwien")),
        "address": F(
            "str", check=_address, description="base URL of the peer's federation listener, e.g. http://198.18.0.2:8448"
        ),
        "public_key": F("str", check=_public_key, description="the peer's ed25519 public key, base64 (32 bytes)"),
    }


class Limits(Record):
    max_body_bytes: int
    max_loaded_documents: int
    max_participants: int
    max_ops_per_request: int
    max_websocket_subscriptions: int
    max_websocket_queue_bytes: int
    max_client_connections: int
    max_federation_connections: int
    max_metrics_connections: int
    header_timeout_s: float
    FIELDS: ClassVar[dict[str, F]] = {
        "max_body_bytes": F("int", default=1 << 20, ge=1024, le=64 << 20),
        "max_loaded_documents": F("int", default=256, ge=1),
        "max_participants": F("int", default=64, ge=1),
        "max_ops_per_request": F("int", default=100, ge=1),
        "max_websocket_subscriptions": F("int", default=64, ge=1),
        "max_websocket_queue_bytes": F("int", default=4 << 20, ge=64 << 10),
        "max_client_connections": F("int", default=1024, ge=1),
        "max_federation_connections": F("int", default=1024, ge=1),
        "max_metrics_connections": F("int", default=64, ge=1),
        "header_timeout_s": F("float", default=10.0, gt=0),
    }


class FederationSettings(Record):
    antientropy_interval_s: float
    backoff_initial_s: float
    backoff_max_s: float
    request_timeout_s: float
    max_clock_skew_s: float
    max_response_bytes: int
    keepalive_s: float | None
    FIELDS: ClassVar[dict[str, F]] = {
        "antientropy_interval_s": F("float", default=30.0, gt=0),
        "backoff_initial_s": F("float", default=0.5, gt=0),
        "backoff_max_s": F("float", default=60.0, gt=0),
        "request_timeout_s": F("float", default=10.0, gt=0),
        "max_clock_skew_s": F("float", default=300.0, gt=0),
        "max_response_bytes": F("int", default=32 << 20, ge=64 << 10),
        "keepalive_s": F("float", default=None, optional=True, gt=0),
    }

    @property
    def effective_keepalive_s(self) -> float:
        """How long an idle connection to a peer is kept: by default longer than the anti-entropy interval,
        so the next round (or edit) finds it warm."""
        if self.keepalive_s is not None:
            return self.keepalive_s
        return max(120.0, 2.5 * self.antientropy_interval_s)


class StorageSettings(Record):
    compact_every: int
    FIELDS: ClassVar[dict[str, F]] = {"compact_every": F("int", default=200, ge=2)}


class NodeConfig(Record):
    domain: str
    listen: Listen
    data_dir: Path
    signing_key: Path
    admin_token: str | None
    admin_token_file: Path | None
    trusted_peers: list[TrustedPeer]
    limits: Limits
    federation: FederationSettings
    storage: StorageSettings
    FIELDS: ClassVar[dict[str, F]] = {
        "domain": F("str", check=_domain_check("n1.ffwien")),
        "listen": F(Listen),
        "data_dir": F("path"),
        "signing_key": F("path"),
        "admin_token": F("str", default=None, optional=True, min_length=16),
        "admin_token_file": F("path", default=None, optional=True),
        "trusted_peers": F("list", item=F(TrustedPeer), factory=list, before=lambda v: [] if v is None else v),
        "limits": F(Limits, factory=Limits),
        "federation": F(FederationSettings, factory=FederationSettings),
        "storage": F(StorageSettings, factory=StorageSettings),
    }

    def check(self) -> None:
        if self.admin_token is None and self.admin_token_file is None:
            raise ValueError("one of admin_token or admin_token_file is required")
        seen: set[str] = set()
        for peer in self.trusted_peers:
            if peer.domain == self.domain:
                raise ValueError(f"trusted_peers lists this node's own domain {peer.domain}")
            if peer.domain in seen:
                raise ValueError(f"trusted_peers lists {peer.domain} twice")
            seen.add(peer.domain)

    def dump_json(self) -> str:
        """The validated config with its defaults, as compact JSON (what check-config --json prints);
        the admin token is shown as "<redacted>"."""
        import json

        data = self.dump()
        if data.get("admin_token") is not None:
            data["admin_token"] = "<redacted>"
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    def loose_permissions(self) -> list[str]:
        """Secret files (signing key, admin token file) that group or others can read."""
        out = []
        for path in (self.signing_key, self.admin_token_file):
            try:
                if path is not None and path.stat().st_mode & 0o077:
                    out.append(
                        f"{path} is readable by group or others (mode {path.stat().st_mode & 0o777:04o}); chmod 600 it"
                    )
            except OSError:
                pass
        return out

    def read_admin_token(self) -> str:
        if self.admin_token is not None:
            return self.admin_token
        assert self.admin_token_file is not None
        token = self.admin_token_file.read_text().strip()
        if len(token) < 16:
            raise ConfigError("the admin token must be at least 16 characters", str(self.admin_token_file))
        return token

    def peer(self, domain: str) -> TrustedPeer | None:
        for p in self.trusted_peers:
            if p.domain == domain:
                return p
        return None


def _field_name(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


def validate_config(data: Any, source: str = "<config>") -> NodeConfig:
    """Validate parsed config data; raise ConfigError naming the first bad field."""
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping", source)
    try:
        return NodeConfig.validate(data)  # type: ignore[no-any-return]
    except ValidationFailed as exc:
        msg = exc.msg.removeprefix("Value error, ")
        if exc.kind == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(msg, source, _field_name(exc.loc)) from None
    except RecursionError:
        raise ConfigError("the config is nested too deeply", source) from None


# libyaml's safe loader is ~10x faster: a config with 245 trusted peers parses in ~10 ms instead of ~130
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_config_text(text: str, source: str = "<config>") -> NodeConfig:
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader (libyaml's when present)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"not valid YAML ({getattr(exc, 'problem', exc)})", where) from None
    return validate_config(data, source)


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate a config file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the file ({exc.strerror})", str(p)) from None
    return parse_config_text(text, str(p))


@functools.lru_cache(maxsize=8)
def _environment(template_dir: str) -> Any:
    """One Jinja2 environment per template directory: it caches the compiled template, so a
    deployer rendering hundreds of configs compiles it once."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_config(values: dict[str, Any], template_dir: str | Path | None = None, *, check: bool = True) -> str:
    """Render the node config from the image's Jinja2 template and check the result (check=False
    leaves the check to `load_config` when the node starts: a deployer rendering hundreds of configs
    with hundreds of peers each saves ~15 ms per config).

    `values` carries the same keys as the config (domain, listen.{client,federation,metrics}.{host,port},
    data_dir, signing_key, admin_token_file or admin_token, trusted_peers, limits, federation, storage).
    """
    import jinja2

    env = _environment(str(template_dir or TEMPLATE_DIR))
    for required in ("domain", "listen", "data_dir", "signing_key"):
        if required not in values:
            raise ConfigError("a template value is missing", CONFIG_TEMPLATE, required)
    try:
        text = env.get_template(CONFIG_TEMPLATE).render(**values)
    except (jinja2.UndefinedError, TypeError) as exc:
        raise ConfigError(f"a template value is missing or of the wrong kind ({exc})", CONFIG_TEMPLATE) from None
    if check:
        parse_config_text(text, f"rendered {CONFIG_TEMPLATE}")
    return text
