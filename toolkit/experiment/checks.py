"""Checks: named assertions over a run's results. Verdicts are pass, fail or unknown; a check
whose data is missing is unknown, never a silent pass.

A check is written as `METRIC OP VALUE` (`lost_updates == 0`), with arguments where the metric
takes them (`converged_within_s(after: heal) < 10`), or as `{promql, op, value}` evaluated against
the run's Prometheus at the end of the run.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .model import Check

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}

# metric -> (what it is, the arguments it takes)
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "lost_updates": ("acknowledged updates found on no replica at the end", ()),
    "diverged_updates": ("acknowledged updates missing from some replica that should hold them", ()),
    "diverged_objects": ("objects whose replicas' state hashes differ at the end", ()),
    "acknowledged_updates": ("updates the nodes acknowledged", ()),
    "availability": ("share of measured operations that succeeded (ok / all)", ()),
    "failed_ops": ("measured operations that failed or timed out", ()),
    "latency_p50_s": ("median client latency of measured operations", ()),
    "latency_p95_s": ("95th percentile client latency", ()),
    "latency_p99_s": ("99th percentile client latency", ()),
    "propagation_p50_s": (
        "median time from acknowledgement to visibility on another node that was "
        "reachable (not cut off by a partition) when the update was acknowledged",
        (),
    ),
    "propagation_p95_s": ("95th percentile propagation", ()),
    "propagation_p99_s": ("99th percentile propagation", ()),
    "propagation_partitioned_p95_s": (
        "95th percentile propagation of updates acknowledged while the two "
        "nodes were partitioned (they wait for the heal)",
        (),
    ),
    "converged_within_s": (
        "seconds from a heal until every update acknowledged before it is visible "
        "on every replica (the slowest heal if several match)",
        ("after",),
    ),
    "gini": ("Gini coefficient of contributions per user, from the nodes' ledgers", ()),
    "powerlaw_alpha": ("power-law exponent of the tail of contributions per user", ()),
}

_EXPR = re.compile(
    r"^\s*(?P<metric>[a-z_0-9]+)\s*(?:\((?P<args>[^)]*)\))?\s*(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


def parse_check(text: str) -> Check:
    """'propagation_p95_s < 2' -> Check; raises ValueError with what is allowed."""
    m = _EXPR.match(text)
    if not m:
        raise ValueError(
            f"cannot read check {text!r}: write METRIC OP NUMBER, e.g. 'lost_updates == 0', "
            f"with OP one of {' '.join(OPS)}"
        )
    metric = m["metric"]
    if metric not in METRICS:
        from ..topology.names import did_you_mean

        raise ValueError(f"unknown check metric '{metric}'{did_you_mean(metric, METRICS)}; known: {', '.join(METRICS)}")
    args: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (m["args"] or "").split(","))):
        key, sep, val = part.partition(":")
        if not sep or not val.strip():
            raise ValueError(f"check argument {part!r}: write NAME: VALUE")
        args[key.strip()] = val.strip()
    allowed = METRICS[metric][1]
    for key in args:
        if key not in allowed:
            raise ValueError(
                f"{metric} takes {'no arguments' if not allowed else 'only ' + ', '.join(allowed)}, not '{key}'"
            )
    for key in allowed:
        if key not in args:
            raise ValueError(f"{metric} needs ({key}: ...), e.g. {metric}({key}: heal)")
    return Check(name=" ".join(text.split()), op=m["op"], value=float(m["value"]), metric=metric, args=args)


@dataclass(frozen=True)
class Verdict:
    name: str
    verdict: str  # pass, fail, unknown
    observed: float | None
    op: str
    value: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(self.observed, float) and not math.isfinite(self.observed):
            d["observed"] = str(self.observed)
        return d


def metric_value(check: Check, results: dict[str, Any]) -> tuple[float | None, str]:
    """The observed value of a result metric, or None with why it is missing."""
    assert check.metric is not None
    if check.metric == "converged_within_s":
        if results.get("observed") is False:
            return None, "not observed in this run (workload.observe: false)"
        target = check.args["after"]
        heals = [h for h in results.get("convergence", []) if target in (h["event"], h["kind"])]
        if not heals:
            return None, f"no heal event '{target}' happened in this run"
        times = [h["converged_s"] for h in heals]
        if any(t is None for t in times):
            return math.inf, "some replicas had not converged by the end of the run"
        return max(times), f"{len(heals)} heal(s)"
    value = results.get(check.metric)
    if value is None:
        return None, f"no data for {check.metric} in this run"
    return float(value), ""


def judge(check: Check, observed: float | None, why: str) -> Verdict:
    if observed is None or (isinstance(observed, float) and math.isnan(observed)):
        return Verdict(check.name, "unknown", None, check.op, check.value, why or "no data")
    ok = OPS[check.op](observed, check.value)
    return Verdict(check.name, "pass" if ok else "fail", observed, check.op, check.value, why)


def evaluate(
    checks: tuple[Check, ...] | list[Check],
    results: dict[str, Any],
    promql: Callable[[str], tuple[float | None, str]] | None = None,
) -> list[Verdict]:
    """Judge every check. `promql(query)` returns (value, why) from the run's Prometheus."""
    out = []
    for check in checks:
        if check.promql is not None:
            if promql is None:
                out.append(judge(check, None, "no Prometheus in this run"))
                continue
            observed, why = promql(check.promql)
        else:
            observed, why = metric_value(check, results)
        out.append(judge(check, observed, why))
    return out


def overall(verdicts: list[Verdict]) -> str:
    """pass only when every check passed; fail if any failed; otherwise unknown."""
    if any(v.verdict == "fail" for v in verdicts):
        return "fail"
    if any(v.verdict == "unknown" for v in verdicts):
        return "unknown"
    return "pass"
