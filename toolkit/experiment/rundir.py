"""The run directory `runs/<utc-time>-<name>/` and what goes in it: manifest.json, timeline.jsonl,
history.jsonl, plan.jsonl (the intended actions), checks.json, summary.json, junit.xml,
metrics/, tsdb/, nodes/<device>/, report.html."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from .checks import Verdict

FILES = (
    "manifest.json",
    "timeline.jsonl",
    "history.jsonl",
    "plan.jsonl",
    "checks.json",
    "summary.json",
    "junit.xml",
    "report.html",
)


def runs_root() -> Path:
    import os

    return Path(os.environ.get("CNLAB_RUNS_DIR", "runs"))


def new_run_dir(name: str, root: Path | None = None) -> Path:
    root = root or runs_root()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = root / f"{stamp}-{name}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{stamp}-{name}-{n}"
    path.mkdir(parents=True)
    return path


def _clean(value: Any) -> Any:
    """JSON has no infinity: write it as a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_clean(data), indent=1, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_junit(path: Path, suite: str, verdicts: list[Verdict], time_s: float, incomplete: bool = False) -> None:
    """One testcase per check: a failure for fail, skipped (with the reason) for unknown."""
    fails = sum(v.verdict == "fail" for v in verdicts)
    skipped = sum(v.verdict == "unknown" for v in verdicts)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<testsuites><testsuite name={quoteattr("cnlab." + suite)} tests="{len(verdicts)}" '
        f'failures="{fails}" errors="{1 if incomplete else 0}" skipped="{skipped}" time="{time_s:.3f}">',
    ]
    for v in verdicts:
        head = f'  <testcase classname={quoteattr("cnlab." + suite)} name={quoteattr(v.name)} time="0">'
        observed = "no data" if v.observed is None else f"{v.observed:g}"
        message = f"observed {observed}, wanted {v.op} {v.value:g}" + (f" ({v.detail})" if v.detail else "")
        if v.verdict == "fail":
            lines += [head, f"    <failure message={quoteattr(message)}>{escape(message)}</failure>", "  </testcase>"]
        elif v.verdict == "unknown":
            lines += [head, f"    <skipped message={quoteattr('unknown: ' + message)}/>", "  </testcase>"]
        else:
            lines += [head + "</testcase>"]
    if incomplete:
        lines += [
            f'  <testcase classname={quoteattr("cnlab." + suite)} name="run completed" time="0">',
            '    <error message="the run was interrupted; results are partial"/>',
            "  </testcase>",
        ]
    lines += ["</testsuite></testsuites>"]
    path.write_text("\n".join(lines) + "\n")


def list_runs(root: Path | None = None) -> list[dict[str, Any]]:
    root = root or runs_root()
    out = []
    for d in sorted(root.glob("*/")) if root.exists() else []:
        summary = d / "summary.json"
        if not summary.exists():
            out.append({"run": d.name, "path": str(d), "verdict": "incomplete (no summary)"})
            continue
        s = read_json(summary)
        out.append(
            {
                "run": d.name,
                "path": str(d),
                "verdict": s.get("verdict"),
                "experiment": s.get("experiment"),
                "checks": s.get("checks_count"),
                "failed": s.get("checks_failed"),
                "incomplete": s.get("incomplete", False),
                "duration_s": s.get("wall_s"),
            }
        )
    return out
