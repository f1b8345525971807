"""The experiment YAML format as pydantic models (the edge); `loader.py` turns it into a plan.

An experiment is a topology (a path, an inline mapping, or a NetJSON file), federation overrides,
a seed, how long to run, a workload model, a timeline of faults and the checks that judge the run.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, allow_inf_nan=False)]
ACTIONS = ("create", "edit_text", "set_key", "append", "add_participant", "read", "subscribe")
Action = Literal["create", "edit_text", "set_key", "append", "add_participant", "read", "subscribe"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NetjsonTopology(Strict):
    netjson: str = Field(description="a NetJSON NetworkGraph file, relative to the experiment file")
    link: str = Field("mesh-2.4ghz", description="preset giving per-attempt delay, jitter and rate")
    mac_attempts: Annotated[int, Field(ge=1, le=16)] = 4
    profile: str = "host"
    site: str | None = None
    name: str | None = None


class FederationOverrides(Strict):
    """Settings handed to every node (the node's `federation:` config) and where nodes run."""

    on: Literal["all"] | list[str] | None = Field(None, description="devices and sites that run a node")
    nodes_per_process: Annotated[int, Field(ge=1)] | None = Field(
        None, description="dense mode: nodes served by one process (default: one forked process per node)"
    )
    antientropy_interval_s: PositiveSeconds | None = None
    backoff_initial_s: PositiveSeconds | None = None
    backoff_max_s: PositiveSeconds | None = None
    request_timeout_s: PositiveSeconds | None = None

    def node_settings(self) -> dict[str, float]:
        keys = ("antientropy_interval_s", "backoff_initial_s", "backoff_max_s", "request_timeout_s")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class WorkloadCommon(Strict):
    timeout_s: PositiveSeconds = Field(10, description="an operation unanswered after this is 'info'")
    observe: StrictBool = Field(
        True,
        description="subscribe an observer on every node to measure propagation and convergence; "
        "false keeps them only for set-up (to measure what observing costs: propagation and "
        "convergence are then unknown)",
    )


class CbppWorkload(WorkloadCommon):
    """P2Pvalue's agent-based model of commons-based peer production, time-compressed."""

    model: Literal["cbpp"]
    users: Annotated[int, Field(ge=3)] = Field(500, description="users in total (split core:occasional:consumer)")
    shares: tuple[Share, Share, Share] = Field((1, 9, 90), description="core : occasional : consumer")
    week_s: PositiveSeconds = Field(60, description="seconds of real time per model week")
    actions_per_hour: PositiveSeconds = Field(1.0, description="actions a user takes per hour of weekly budget")
    core_hours: tuple[Seconds, Seconds] = Field((1, 40), description="weekly budget range of core members")
    occasional_hours: tuple[Seconds, Seconds] = Field((1, 20), description="weekly budget of occasional contributors")
    consumer_hours: tuple[Seconds, Seconds] = Field((0, 2), description="weekly budget of consumers")
    role_change_per_week: Annotated[float, Field(ge=0, le=1)] = Field(
        0.005,
        description="consumer->occasional and occasional->core probability per week "
        "(the reverse rates keep the shares stationary)",
    )
    engagement_alpha: Annotated[float, Field(gt=1, le=5)] = Field(
        1.6, description="Pareto shape of a user's engagement (heavy-tailed activity)"
    )
    projects: Annotated[int, Field(ge=1)] | None = Field(None, description="default: users / 10")
    projects_per_core: Annotated[int, Field(ge=1, le=10)] = Field(
        3, description="projects a core member belongs to (everyone else joins one)"
    )
    max_members: Annotated[int, Field(ge=2, le=30)] = Field(24, description="members per project at most")
    objects_per_project: Annotated[int, Field(ge=1, le=50)] = 2
    local_affinity: Annotated[float, Field(ge=0, le=1)] = Field(
        0.6, description="share of a project's members picked from its home site"
    )


class ConstantWorkload(WorkloadCommon):
    """A fixed rate of a chosen action mix (Poisson arrivals), for benchmarks."""

    model: Literal["constant"]
    rate_per_s: PositiveSeconds = Field(description="operations per second, all nodes together")
    mix: dict[Action, Share] = Field(
        default_factory=lambda: {  # type: ignore[arg-type]  # literal keys
            "set_key": 0.5,
            "append": 0.2,
            "edit_text": 0.2,
            "read": 0.1,
        }
    )
    users_per_node: Annotated[int, Field(ge=1, le=50)] = 2
    objects: Annotated[int, Field(ge=1)] = Field(20, description="shared objects, each spanning `span` nodes")
    span: Annotated[int, Field(ge=1, le=60)] = Field(3, description="nodes each object's participants live on")

    @model_validator(mode="after")
    def _mix(self) -> ConstantWorkload:
        if not self.mix or sum(self.mix.values()) <= 0:
            raise ValueError("mix needs at least one action with a positive share")
        return self


Workload = Annotated[CbppWorkload | ConstantWorkload, Field(discriminator="model")]


class PartitionEvent(Strict):
    groups: list[str | list[str]] = Field(description="sites, devices, or lists of devices; the rest is one more group")


class LinkEvent(Strict):
    between: tuple[str, str]
    up: StrictBool | None = Field(None, description="bring the link down (false) or up (true)")
    set: dict[Literal["delay_ms", "jitter_ms", "loss_pct", "loss_burst", "rate_kbit"], Seconds] | None = None
    one_way: StrictBool = False

    @model_validator(mode="after")
    def _one(self) -> LinkEvent:
        if (self.up is None) == (self.set is None):
            raise ValueError("a link event has exactly one of 'up' and 'set'")
        return self


class NodeEvent(Strict):
    device: str
    action: Literal["kill", "restart", "stop", "start", "pause", "resume"]


class DeviceEvent(Strict):
    device: str
    action: Literal["reboot"]


class LoadEvent(Strict):
    factor: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] = Field(
        description="multiply the workload's arrival rate by this from now on"
    )


class TimelineEntry(Strict):
    name: str | None = Field(None, description="a name other events and checks refer to")
    at_s: Seconds | None = Field(None, description="seconds after the warm-up ends")
    after: str | None = Field(None, description="an earlier event's name, or a phase: warmup, workload")
    delay_s: Seconds = Field(0, description="with 'after': seconds after it")
    partition: PartitionEvent | None = None
    heal: StrictBool | None = None
    link: LinkEvent | None = None
    node: NodeEvent | None = None
    device: DeviceEvent | None = None
    load: LoadEvent | None = None

    @model_validator(mode="after")
    def _shape(self) -> TimelineEntry:
        kinds = [k for k in ("partition", "heal", "link", "node", "device", "load") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "each timeline entry has exactly one of partition, heal, link, node, device, load"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        if (self.at_s is None) == (self.after is None):
            raise ValueError("each timeline entry has exactly one of 'at_s' and 'after'")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("partition", "heal", "link", "node", "device", "load") if getattr(self, k) is not None)


class PromqlCheck(Strict):
    name: str | None = None
    promql: str = Field(description="an instant query evaluated at the end of the run; one series")
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float


class ExperimentSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    description: str | None = None
    topology: str | dict[str, Any] = Field(
        description="a topology file (relative to this file; a .json file is read as NetJSON), an inline "
        "topology mapping, or {netjson: FILE, link?, mac_attempts?, profile?, site?, name?}"
    )
    federation: FederationOverrides = Field(default_factory=lambda: FederationOverrides.model_validate({}))
    seed: Annotated[int, Field(ge=0)] = 1
    duration_s: PositiveSeconds = Field(description="measured workload time, after the warm-up")
    warmup_s: Seconds = Field(5, description="workload time before measuring starts")
    quiesce_s: Seconds = Field(30, description="after the workload: at most this long waiting for replicas to converge")
    workload: Workload
    timeline: list[TimelineEntry] = []
    checks: list[str | PromqlCheck] = Field(
        default_factory=list,
        description="'lost_updates == 0', 'propagation_p95_s < 2', "
        "'converged_within_s(after: heal) < 10', 'availability > 0.99', or {promql, op, value}",
    )


def json_schema() -> dict[str, Any]:
    schema = ExperimentSpec.model_json_schema(by_alias=True)
    schema["title"] = "cnlab experiment"
    return schema
