"""report.html: one self-contained file (plots inline as base64 PNG, no scripts, no external
resources) rendered from the run directory alone, so `cnlab report RUN` can redo it later."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

PLOTS = ("latency", "propagation", "throughput", "outbox", "convergence", "contributions", "fidelity")


def _load(run_dir: Path, name: str, default: Any) -> Any:
    p = run_dir / name
    if not p.exists():
        return default
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return json.loads(p.read_text())


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _fig(title: str, xlabel: str, ylabel: str, size: tuple[float, float] = (8.0, 3.2)) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _nodata(ax: Any, why: str) -> None:
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="#888")


def _shade_faults(ax: Any, summary: dict[str, Any], timeline: list[dict[str, Any]]) -> None:
    for i, p in enumerate(summary.get("partitions") or []):
        ax.axvspan(p["start"], p["end"], color="#f4a261", alpha=0.25, label="partition" if i == 0 else None)
    for e in timeline:
        if e.get("kind") in ("node", "device", "link", "load") and e.get("achieved_t") is not None:
            ax.axvline(e["achieved_t"], color="#6c757d", ls="--", lw=0.8)
            ax.text(
                e["achieved_t"],
                1.0,
                " " + e.get("describe", e["kind"]),
                transform=ax.get_xaxis_transform(),
                fontsize=7,
                va="top",
                rotation=90,
                color="#555",
            )


def _event_text(event: dict[str, Any]) -> str:
    """What an event did; a partition that split a group apart names the devices it cut off from the
    rest of their group (pairs on different islands count as partitioned in the propagation figures)."""
    text = str(event.get("describe", event["kind"]))
    group_of = {m: i for i, g in enumerate(event.get("groups") or []) for m in g}
    largest: dict[int, list[str]] = {}
    for island in event.get("islands") or []:  # largest first
        largest.setdefault(group_of.get(island[0], -1), island)
    stray = [i for i in event.get("islands") or [] if i is not largest.get(group_of.get(i[0], -1))]
    if stray:
        names = ", ".join("+".join(i) for i in stray[:10]) + (", ..." if len(stray) > 10 else "")
        text += f"; {len(stray)} more islands were cut off from the rest of their group: {names}"
    return text


def plot_latency(history: list[dict[str, Any]], summary: dict[str, Any], timeline: list[dict[str, Any]]) -> str:
    fig, ax = _fig(
        "Client latency over time (fault periods shaded)", "seconds since the workload started", "latency (s)"
    )
    invoked = {h["seq"]: h for h in history if h["type"] == "invoke"}
    done = [h for h in history if h["type"] in ("ok", "fail", "info") and h["seq"] in invoked]
    if not done:
        _nodata(ax, "no operations")
    for kind, color, marker in (("ok", "#2a9d8f", "."), ("fail", "#e63946", "x"), ("info", "#9b5de5", "+")):
        pts = [(invoked[h["seq"]]["t"], h["latency_s"]) for h in done if h["type"] == kind]
        if pts:
            ax.scatter(
                [p[0] for p in pts],
                [p[1] for p in pts],
                s=6 if kind == "ok" else 18,
                c=color,
                marker=marker,
                label=f"{kind} ({len(pts)})",
                alpha=0.7,
            )
    ax.set_yscale("log") if done else None
    _shade_faults(ax, summary, timeline)
    if done:
        ax.legend(fontsize=7, loc="upper right")
    return _png(fig)


def _ratio(x: object) -> str:
    return f"{x:.2f}x" if isinstance(x, float) else "unknown"


def plot_propagation(propagation: list[dict[str, Any]]) -> str:
    fig, ax = _fig(
        "Propagation: acknowledged at the origin -> visible on another node (CDF by hop count)",
        "seconds",
        "share of updates",
    )
    samples = [p for p in propagation if not p.get("warmup")]
    if not samples:
        _nodata(ax, "no propagation samples")
        return _png(fig)
    by_hops: dict[str, list[float]] = {}
    for p in samples:
        key = "partitioned" if p.get("partitioned") else f"{p.get('hops')} hop(s)"
        by_hops.setdefault(key, []).append(max(p["delay_s"], 1e-4))
    for key in sorted(by_hops, key=lambda k: (k == "partitioned", int(k.split()[0]) if k[0].isdigit() else 0)):
        xs = sorted(by_hops[key])
        ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=f"{key} (n={len(xs)})")
    ax.set_xscale("log")
    ax.legend(fontsize=7)
    return _png(fig)


def plot_throughput(history: list[dict[str, Any]], summary: dict[str, Any], timeline: list[dict[str, Any]]) -> str:
    fig, ax = _fig("Throughput: operations completed per second", "seconds since the workload started", "ops/s")
    ends = [h for h in history if h["type"] in ("ok", "fail", "info")]
    if not ends:
        _nodata(ax, "no operations")
        return _png(fig)
    last = int(max(h["t"] for h in ends)) + 1
    for kind, color in (("ok", "#2a9d8f"), ("fail", "#e63946"), ("info", "#9b5de5")):
        counts = [0] * (last + 1)
        for h in ends:
            if h["type"] == kind and h["t"] >= 0:
                counts[int(h["t"])] += 1
        if any(counts):
            ax.plot(range(last + 1), counts, color=color, label=kind, lw=1.2)
    _shade_faults(ax, summary, timeline)
    ax.legend(fontsize=7)
    return _png(fig)


def _series(metrics: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return ((metrics.get("series") or {}).get(name) or {}).get("series") or []


def plot_outbox(
    metrics: dict[str, Any], t0: float | None, summary: dict[str, Any], timeline: list[dict[str, Any]]
) -> str:
    fig, ax = _fig(
        "Federation outbox depth (all nodes, from Prometheus)", "seconds since the workload started", "queued updates"
    )
    series = _series(metrics, "outbox_depth_sum")
    if not series or t0 is None:
        _nodata(ax, "no outbox series exported (was Prometheus running?)")
        return _png(fig)
    for s in series:
        ax.plot([float(t) - t0 for t, _ in s["values"]], [float(v) for _, v in s["values"]], lw=1.2)
    _shade_faults(ax, summary, timeline)
    return _png(fig)


def plot_convergence(summary: dict[str, Any]) -> str:
    fig, ax = _fig("Time to converge after each heal", "", "seconds")
    conv = summary.get("convergence") or []
    if not conv:
        _nodata(ax, "no heal in this run")
        return _png(fig)
    names = [c["event"] for c in conv]
    values = [c["converged_s"] if c["converged_s"] is not None else 0 for c in conv]
    bars = ax.bar(names, values, color=["#2a9d8f" if c["converged_s"] is not None else "#e63946" for c in conv])
    for bar, c in zip(bars, conv, strict=True):
        label = (
            f"{c['converged_s']:.2f} s"
            if c["converged_s"] is not None
            else f"not converged ({c['never_seen']} missing)"
        )
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    return _png(fig)


def plot_contributions(summary: dict[str, Any]) -> str:
    contrib = summary.get("contributions") or {}
    per_user = contrib.get("per_user") or {}
    g = contrib.get("gini")
    alpha = contrib.get("powerlaw_alpha")
    title = "Contributions per user (ledger edits, rank order)"
    if g is not None:
        title += f" - Gini {g:.2f}"
    if alpha is not None:
        title += f", power-law exponent {alpha:.2f}"
    fig, ax = _fig(title, "user rank", "edits")
    values = sorted((v for v in per_user.values() if v > 0), reverse=True)
    if not values:
        _nodata(ax, "no contributions read from the ledgers")
        return _png(fig)
    ax.loglog(range(1, len(values) + 1), values, marker=".", ls="none", color="#264653")
    return _png(fig)


def plot_fidelity(manifest: dict[str, Any]) -> str:
    fid = manifest.get("link_fidelity") or {}
    fig, ax = _fig("Link fidelity: how late the wire released frames", "lateness bucket (upper bound)", "frames")
    hist = fid.get("histogram")
    if not fid.get("available") or not hist:
        _nodata(ax, "the shaper reported no lateness (netem or none), or the run stopped early")
        return _png(fig)
    cum = hist["cumulative"]
    counts = [cum[0]] + [cum[i] - cum[i - 1] for i in range(1, len(cum))]
    labels = [f"{b * 1000:g} ms" if b != "+Inf" else "more" for b in hist["le_s"]]
    ax.bar(labels, counts, color="#457b9d")
    ax.set_yscale("log")
    ax.tick_params(axis="x", labelsize=7, rotation=45)
    ax.set_title(
        f"Link fidelity: frames released late by the wire (p50 <= {fid['p50_s'] * 1000:g} ms, "
        f"p99 <= {fid['p99_s'] * 1000:g} ms, max {fid['max_s'] * 1000:.2f} ms)",
        fontsize=10,
    )
    return _png(fig)


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1000px;color:#222}
.banner{padding:.8em 1.2em;border-radius:6px;color:#fff;font-size:1.3em;font-weight:600}
.pass{background:#2a9d8f}.fail{background:#e63946}.unknown{background:#6c757d}.incomplete,.error{background:#f4a261}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td.pass{color:#1d6f65;background:none;font-weight:600}td.fail{color:#c1121f;background:none;font-weight:600}
td.unknown{color:#555;background:none;font-weight:600}figure{margin:1em 0}img{max-width:100%}
.facts td:first-child{color:#555}
"""


def render(run_dir: Path) -> str:
    summary = _load(run_dir, "summary.json", {})
    manifest = _load(run_dir, "manifest.json", {})
    checks = _load(run_dir, "checks.json", [])
    timeline = _load(run_dir, "timeline.jsonl", [])
    history = _load(run_dir, "history.jsonl", [])
    propagation = _load(run_dir, "propagation.json", [])
    metrics = _load(run_dir, "metrics/series.json", {})
    t0 = next((h.get("wall") for h in history if h.get("event") == "workload_start"), None)
    e = html.escape
    verdict = summary.get("verdict", "unknown")
    banner = {
        "pass": "PASS: every check passed",
        "fail": f"FAIL: {summary.get('checks_failed', '?')} check(s) failed",
        "unknown": "UNKNOWN: some checks had no data",
        "incomplete": "INCOMPLETE: the run was interrupted",
        "error": f"ERROR: {summary.get('error', '')}",
    }.get(verdict, verdict)
    rows = "".join(
        f"<tr><td>{e(c['name'])}</td><td class='{e(c['verdict'])}'>{e(c['verdict'])}</td>"
        f"<td>{e(str(c['observed']) if c['observed'] is not None else 'no data')}</td>"
        f"<td>{e(c['op'])} {c['value']:g}</td><td>{e(c.get('detail') or '')}</td></tr>"
        for c in checks
    )
    facts = [
        ("experiment", manifest.get("experiment")),
        (
            "topology",
            f"{manifest.get('topology')} "
            f"({manifest.get('devices')} devices, {manifest.get('links')} links, {manifest.get('nodes')} nodes)",
        ),
        ("topology hash", manifest.get("topology_hash")),
        ("seed", manifest.get("seed")),
        ("workload", (manifest.get("workload") or {}).get("model")),
        ("shaper", manifest.get("shaper")),
        ("git commit", manifest.get("git_commit")),
        ("wall time", f"{summary.get('wall_s')} s"),
        ("operations", f"{summary.get('operations')} ({summary.get('measured_operations')} measured)"),
        ("acknowledged updates", summary.get("acknowledged_updates")),
        ("present everywhere", summary.get("present_everywhere")),
        ("lost", summary.get("lost_updates")),
        ("diverged updates", summary.get("diverged_updates")),
        ("diverged objects", ", ".join(summary.get("diverged_object_ids") or []) or "none"),
        ("availability", summary.get("availability")),
        (
            "latency p50 / p95 / p99 (s)",
            f"{summary.get('latency_p50_s')} / {summary.get('latency_p95_s')} / {summary.get('latency_p99_s')}",
        ),
        (
            "propagation p50 / p95 / p99 (s)",
            f"{summary.get('propagation_p50_s')} / {summary.get('propagation_p95_s')}"
            f" / {summary.get('propagation_p99_s')}",
        ),
        (
            "propagation / path delay floor, p50 / p95",
            f"{_ratio(summary.get('propagation_floor_ratio_p50'))} / {_ratio(summary.get('propagation_floor_ratio_p95'))}",
        ),
        (
            "runner's event-loop lag p50 / p99 / max (s): the error bound of recorded times",
            f"{summary.get('runner_lag_p50_s')} / {summary.get('runner_lag_p99_s')} / {summary.get('runner_lag_max_s')}",
        ),
    ]
    fact_rows = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in facts)
    events = "".join(
        f"<tr><td>{e(x['name'])}</td><td>{e(_event_text(x))}</td><td>{x['planned_t']:.2f}</td>"
        f"<td>{x.get('achieved_t', 0):.2f}</td><td>{'ok' if x.get('ok') else e(x.get('error', 'failed'))}</td></tr>"
        for x in timeline
    )
    plots = {
        "latency": plot_latency(history, summary, timeline),
        "propagation": plot_propagation(propagation),
        "throughput": plot_throughput(history, summary, timeline),
        "outbox": plot_outbox(metrics, t0, summary, timeline),
        "convergence": plot_convergence(summary),
        "contributions": plot_contributions(summary),
        "fidelity": plot_fidelity(manifest),
    }
    figures = "".join(
        f"<figure id='plot-{name}'><img alt='{name}' src='data:image/png;base64,{png}'></figure>"
        for name, png in plots.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cnlab run {e(run_dir.name)}: {e(verdict)}</title>
<style>{CSS}</style></head><body>
<div class="banner {e(verdict)}" id="verdict">{e(banner)}</div>
<h1>{e(str(manifest.get("experiment", run_dir.name)))}</h1><p>{e(manifest.get("description") or "")}</p>
<p>Run <code>{e(run_dir.name)}</code>{" - <b>incomplete: results are partial</b>" if summary.get("incomplete") else ""}</p>
<h2>Checks</h2><table id="checks"><tr><th>check</th><th>verdict</th><th>observed</th><th>wanted</th><th>detail</th></tr>{rows}</table>
<h2>Outcome</h2><table class="facts">{fact_rows}</table>
<h2>Timeline</h2><table><tr><th>event</th><th>what</th><th>planned (s)</th><th>achieved (s)</th><th>result</th></tr>{events}</table>
<h2>Plots</h2>{figures}
</body></html>
"""


def write_report(run_dir: Path) -> Path:
    path = run_dir / "report.html"
    tmp = run_dir / ".report.html.tmp"
    tmp.write_text(render(run_dir), encoding="utf-8")
    tmp.replace(path)
    return path
