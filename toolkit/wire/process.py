"""The wire process: command line, start-up, control server, shutdown.

Run inside the wire namespace:
    python -m toolkit.wire --spec SPEC.json --control SOCK.sock

It disables offloads on its wire-side veth ends (unless --no-setup), binds them, opens the control
socket, prints `ready`, and forwards frames until SIGTERM/SIGINT or a `stop` request (exit 0,
socket removed).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import stat
import sys
from pathlib import Path

from toolkit.errors import CnlabError
from toolkit.wire.control import MAX_LINE, handle_request, stats_pieces, wants_stats
from toolkit.wire.engine import Engine
from toolkit.wire.linux import disable_offloads, prepare_interface
from toolkit.wire.ring import DEFAULT_SLOTS
from toolkit.wire.spec import WireSpec, load_spec

log = logging.getLogger("cnlab.wire")

DEFAULT_RT_PRIORITY = 10


async def serve(
    spec: WireSpec,
    control: Path,
    setup_interfaces: bool = True,
    kernel_timestamps: bool = True,
    ring_slots: int = DEFAULT_SLOTS,
) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    if setup_interfaces:
        for link in spec.links:
            for ifname in (link.a_if, link.b_if):
                disable_offloads(ifname)
                prepare_interface(ifname)
    engine = Engine(spec, kernel_timestamps=kernel_timestamps, ring_slots=ring_slots)
    engine.open(loop)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not stopping.is_set():
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(b'{"error": "request line too long"}\n')
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                if wants_stats(line):  # large: in pieces, frames are served between them
                    for piece in stats_pieces(engine):
                        writer.write(piece)
                        await asyncio.sleep(0)
                else:
                    writer.write(_dumps(handle_request(engine, line, stopping.set)))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # shutting down; returning normally keeps asyncio from logging the cancel
        finally:
            writer.close()

    _remove_stale_socket(control)
    server = await asyncio.start_unix_server(client, path=str(control), limit=MAX_LINE)
    # Frozen setup objects are never scanned again; frames in flight are short-lived, so collect
    # rarely to keep GC pauses out of the release times.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    log.info("wire up: %d links, pid %d", len(spec.links), os.getpid())
    engine.mark_ready()
    print("ready", flush=True)
    try:
        await stopping.wait()
    finally:
        server.close()
        log.info("wire stopping: %s", _totals(engine))
        engine.close()
        try:
            control.unlink()
        except FileNotFoundError:
            pass


def _dumps(reply: dict[str, object]) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode() + b"\n"


def _remove_stale_socket(path: Path) -> None:
    """A socket file left by a killed predecessor; anything else at that path is an error."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise CnlabError(f"{path} exists and is not a socket; not removing it")
    path.unlink()


def _totals(engine: Engine) -> dict[str, int]:
    totals: dict[str, int] = {}
    for link in engine.links.values():
        for flow in (link.forward, link.reverse):
            counts = flow.to_dict()
            for key in ("ring_drops", "received", "forwarded", "lost", "queue_drops", "dropped_down", "send_errors"):
                totals[key] = totals.get(key, 0) + int(counts[key])  # type: ignore[call-overload]
    return totals


def set_realtime(priority: int) -> bool:
    """SCHED_FIFO for this process, so that busy neighbours do not delay releases (on a shared
    2-core machine this cut the loaded p99 release error from ~5-13 ms to ~0.3-1.6 ms; see
    docs/wire.md). The kernel's RT throttling (95 % of each second by default) still leaves time
    for others if the wire saturates a core. Returns False (and warns) if refused."""
    try:
        # RESET_ON_FORK: helpers we start (ethtool, ip) do not inherit the RT policy.
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except (OSError, ValueError) as exc:
        log.warning("cannot run under SCHED_FIFO priority %d (%s); using the normal scheduler", priority, exc)
        return False
    log.info("running under SCHED_FIFO priority %d", priority)
    return True


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.wire", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, type=Path, help="wire spec (JSON)")
    parser.add_argument("--control", required=True, type=Path, help="Unix control socket to create")
    parser.add_argument(
        "--no-setup",
        action="store_true",
        help="do not touch the interfaces (offloads, link up); the caller has done it",
    )
    parser.add_argument(
        "--realtime",
        type=int,
        metavar="PRIO",
        default=DEFAULT_RT_PRIORITY,
        help=f"run under SCHED_FIFO at this priority (1-99; default {DEFAULT_RT_PRIORITY}) so that other "
        "work on the machine does not delay releases; 0 keeps the normal scheduler. If the kernel "
        "refuses, the wire logs a warning and runs normally",
    )
    parser.add_argument(
        "--no-kernel-timestamps",
        action="store_true",
        help="schedule frames from when they are read, not from the kernel receive time",
    )
    parser.add_argument(
        "--ring-slots",
        type=_positive_int,
        default=DEFAULT_SLOTS,
        metavar="N",
        help=f"frames each veth end's receive ring holds (default {DEFAULT_SLOTS}, 2 KiB each at MTU 1500); "
        "frames arriving while it is full are counted as ring_drops",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s wire[%(process)d] %(levelname)s %(message)s",
    )
    try:
        spec = load_spec(args.spec)
        if args.realtime:
            set_realtime(args.realtime)
        asyncio.run(
            serve(
                spec,
                args.control,
                setup_interfaces=not args.no_setup,
                kernel_timestamps=not args.no_kernel_timestamps,
                ring_slots=args.ring_slots,
            )
        )
    except CnlabError as exc:
        print(f"wire: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
