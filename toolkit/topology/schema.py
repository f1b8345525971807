"""The topology YAML format as pydantic models: field types, ranges and allowed keys.

Cross-references (devices named by links, sites, presets) are checked in `loader.py`, which
validates each device and link on its own so that every mistake in a file is reported at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DirectionSpec(Strict):
    """One direction of a link; fields left out come from the preset."""

    delay_ms: NonNegative | None = Field(None, description="one-way delay in milliseconds")
    jitter_ms: NonNegative | None = Field(None, description="delay variation in milliseconds")
    loss_pct: Percent | None = Field(None, description="packet loss in percent, 0-100")
    loss_burst: Annotated[float, Field(ge=1, allow_inf_nan=False)] | None = Field(
        None, description="mean loss burst length in packets (Gilbert-Elliott); 1 = independent loss"
    )
    rate_kbit: Annotated[int, Field(gt=0)] | None = Field(
        None, description="rate limit in kbit/s; leave out for no limit"
    )
    reorder: StrictBool | None = Field(None, description="let jitter reorder packets")

    def given(self) -> dict[str, Any]:
        """The direction fields written in the file (not those left to the preset)."""
        return {k: getattr(self, k) for k in DirectionSpec.model_fields if getattr(self, k) is not None}


class LinkSpec(DirectionSpec):
    between: tuple[str, str] = Field(description="the two devices the link joins")
    link: str | None = Field(
        None, description="a link preset: p2p-5ghz, mesh-2.4ghz, vpn-over-dsl, lan, or one from link_presets"
    )
    forward: DirectionSpec | None = Field(None, description="overrides for the first->second direction")
    reverse: DirectionSpec | None = Field(None, description="overrides for the second->first direction")
    up: StrictBool = Field(True, description="whether the link starts up")


class DeviceSpec(Strict):
    kind: Literal["emulated", "ssh"] = "emulated"
    site: str | None = None
    profile: str | None = Field(
        None, description="a hardware profile: atom-n2600, alix, vct, rpi3, host, or one from profiles"
    )
    host: str | None = Field(None, description="ssh devices: address or host name")
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    user: str | None = None
    key: str | None = Field(None, description="ssh devices: private key file")
    host_key: Annotated[str, Field(pattern=r"^SHA256:[A-Za-z0-9+/]{43}=?$")] | None = Field(
        None, description="ssh devices: pinned host key fingerprint, as `ssh-keygen -lf` prints it"
    )
    become: StrictBool | None = Field(None, description="ssh devices: run as root through sudo (log in as 'user')")
    root: str | None = Field(
        None,
        description="ssh devices: an absolute prefix for everything cnlab installs (default: none, "
        "the device's own /opt, /etc, /var)",
    )
    deploy: Literal["direct", "ansible"] | None = Field(
        None,
        description="how nodes are deployed: direct (emulated default: started inside the namespace) "
        "or ansible (over SSH; emulated devices then run an sshd on their management address; "
        "ssh devices always use ansible)",
    )
    meta: dict[str, str] | None = Field(None, description="free-form labels, e.g. where an import came from")

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or v.endswith("/") or any(c.isspace() for c in v)):
            raise ValueError("root must be an absolute path without a trailing '/' or spaces")
        return v

    @model_validator(mode="after")
    def _ssh_fields(self) -> DeviceSpec:
        ssh_only = [
            f for f in ("host", "port", "user", "key", "host_key", "become", "root") if getattr(self, f) is not None
        ]
        if self.kind == "ssh" and self.host is None:
            raise ValueError("an ssh device needs 'host'")
        if self.kind == "ssh" and self.deploy == "direct":
            raise ValueError("ssh devices are deployed with ansible, not direct")
        if self.kind == "emulated" and ssh_only:
            raise ValueError(f"{', '.join(ssh_only)} only apply to kind: ssh")
        return self


class SiteSpec(Strict):
    description: str | None = None


class ProfileSpec(Strict):
    cpus: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    memory_mb: Annotated[int, Field(ge=16)] | None = None
    source: str = ""


class DefaultsSpec(Strict):
    profile: str | None = None
    link: str | None = None


class FederationSpec(Strict):
    image: str = Field("p2pvalue", description="a node image under node_images/")
    on: Literal["all"] | list[str] = Field("all", description="'all', or a list of devices and sites")
    trust: Literal["all", "site", "none"] = Field(
        "all", description="who trusts whom: every node every other, nodes of one site, or nobody (plus trust_pairs)"
    )
    trust_pairs: list[tuple[str, str]] = Field(
        [], description="extra pairs of devices that trust each other (both ways)"
    )
    accounts: Annotated[int, Field(ge=0, le=10_000)] | list[str] = Field(
        0, description="accounts created on every node: a count (user1..userN) or a list of usernames"
    )
    limits: dict[str, Any] = Field({}, description="the image's limits (p2pvalue: max_body_bytes, ...)")
    settings: dict[str, Any] = Field(
        {}, description="other config sections of the image (p2pvalue: federation, storage)"
    )
    domain_suffix: str | None = Field(
        None, description="node domains are <device>.<domain_suffix> (default: the topology name)"
    )


class ImportSpec(Strict):
    netjson: str = Field(description="a NetJSON NetworkGraph file, relative to this file")
    link: str = Field("mesh-2.4ghz", description="the preset that gives per-attempt delay, jitter and rate")
    mac_attempts: Annotated[int, Field(ge=1, le=16)] = Field(
        4, description="802.11 transmission attempts per frame, used to turn ETX into IP-level loss"
    )
    profile: str | None = None
    site: str | None = None


class TopologySpec(Strict):
    name: str
    description: str | None = None
    defaults: DefaultsSpec = DefaultsSpec()
    sites: dict[str, SiteSpec | None] | None = None
    profiles: dict[str, ProfileSpec] = {}
    link_presets: dict[str, DirectionSpec] = {}
    devices: dict[str, Any] = {}
    links: list[Any] = []
    federation: FederationSpec | None = None
    allow_partitioned: StrictBool = False
    routing: Literal["static", "babeld"] = Field(
        "static", description="emulated data plane: static shortest-path routes by delay, or babeld in every device"
    )
    import_: ImportSpec | None = Field(None, alias="import")
    provenance: dict[str, Any] | None = Field(None, description="where an imported topology came from")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a topology file, with devices and links spelled out for editors."""
    schema = TopologySpec.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    defs["DeviceSpec"] = DeviceSpec.model_json_schema(ref_template="#/$defs/{model}")
    defs["LinkSpec"] = LinkSpec.model_json_schema(ref_template="#/$defs/{model}")
    for name in ("DeviceSpec", "LinkSpec"):
        defs.update(defs[name].pop("$defs", {}))
    props = schema["properties"]
    props["devices"] = {"type": "object", "additionalProperties": {"$ref": "#/$defs/DeviceSpec"}}
    props["links"] = {"type": "array", "items": {"$ref": "#/$defs/LinkSpec"}}
    schema["title"] = "cnlab topology"
    return schema
