"""CI runs a scaled federation, as our users' CI will: a shortened `cbpp-community` on all 246
FunkFeuer Wien nodes end to end (up, deploy, Prometheus, 500 users in 1 : 9 : 90, a district cut
off and healed, checks, report, down). Marked so that CI never skips it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.netns,
    pytest.mark.prometheus,
    # `make test` runs it on its own after the rest (pytest -m scale): 246 node processes and the
    # workload need the machine's two cores to themselves
    pytest.mark.scale,
]


def test_shortened_cbpp_community_on_all_ffwien_nodes(cnlab, tmp_path, monkeypatch, ffwien):
    monkeypatch.setenv("CNLAB_STATE_DIR", str(tmp_path / "state"))
    exp = yaml.safe_load((REPO / "experiments" / "cbpp-community.yaml").read_text())
    exp["topology"]["netjson"] = str(ffwien)
    exp.update(name="cbpp-community-ci", warmup_s=5, duration_s=40, quiesce_s=60)
    exp["workload"].update(week_s=15, actions_per_hour=0.25)
    cut, heal = exp["timeline"]
    cut["at_s"], heal["at_s"] = 10, 25
    exp["checks"] = ["lost_updates == 0", "converged_within_s(after: heal) < 60"]
    path = tmp_path / "cbpp-community-ci.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    runs = tmp_path / "runs"
    cp = cnlab("run", str(path), "--runs-dir", str(runs), timeout=1500)
    run = next(runs.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    print(
        f"wall {summary['wall_s']} s, acknowledged {summary.get('acknowledged_updates')}, "
        f"converged {summary.get('convergence')}"
    )
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["nodes"] == 246 and manifest["workload_info"]["initial_roles"] == {
        "core": 5,
        "occasional": 45,
        "consumer": 450,
    }
    assert summary["lost_updates"] == 0 and summary["acknowledged_updates"] > 50
    assert summary["convergence"] and summary["convergence"][0]["converged_s"] is not None
    assert (run / "report.html").exists()
    assert json.loads(cnlab("status", "--json").stdout) == []
