"""Long-running structure-aware fuzzing of binary Yjs updates (the suite runs a bounded variant).

Runs the property of tests/node/test_node_yupdate_fuzz.py (pre-parse total; whatever it accepts,
pycrdt applies, reads and re-encodes in a thread with a 1 MiB stack) in fresh subprocesses with
random seeds, batch after batch, until --duration-s has passed or a batch fails (a crash of pycrdt
ends its subprocess and is reported with the batch's output). Stops by itself; no network.
Run: flock /tmp/cnlab-bench.lock .venv/bin/python benchmarks/yjs_fuzz_long.py --duration-s 600
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "node"))

from node_common import write_result  # noqa: E402
from test_node_yupdate_fuzz import run_property  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=300.0)
    ap.add_argument("--batch", type=int, default=2000, help="examples per subprocess")
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/yjs_fuzz_long.md")
    args = ap.parse_args()
    started = time.monotonic()
    batches = accepted = rejected = 0
    failure = ""
    while time.monotonic() - started < args.duration_s:
        res = run_property(args.batch, derandomize=False, timeout_s=max(60.0, args.duration_s * 2))
        batches += 1
        if res.returncode != 0:
            failure = f"batch {batches}: exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
            break
        stats = ast.literal_eval(res.stdout.split(" [")[0])
        accepted += stats["accepted"]
        rejected += stats["rejected"]
        print(f"batch {batches}: {stats}", flush=True)
    elapsed = time.monotonic() - started
    lines = [
        f"- examples: {accepted + rejected} in {batches} batches, {elapsed:.0f} s "
        f"({accepted} accepted by the pre-parse and then applied/read on a 1 MiB stack, {rejected} refused)",
        f"- result: {'FAILED: ' + failure.splitlines()[0] if failure else 'no crash, no exception other than UpdateRejected'}",
    ]
    print("\n".join(lines))
    if failure:
        print(failure)
    if not args.no_write:
        write_result(
            "yjs_fuzz_long",
            "Long-running structure-aware Yjs update fuzzing",
            " ".join(["benchmarks/yjs_fuzz_long.py", *sys.argv[1:]]),
            "\n".join(lines),
        )
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
