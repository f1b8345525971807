"""Kernel netem shaping: `tc` batch lines for one direction of a link (pure, no system access).

One direction a->b is shaped on the egress of a's link end: a root netem qdisc (delay, jitter,
loss) and, when the direction has a rate, a tbf child qdisc under it (the classic netem + tbf
recipe). Lines are for `tc -n NS -batch -` and use `replace`, so the same lines bring a
direction up and change it later.
"""

from __future__ import annotations

from ...topology.model import Direction

# tbf needs a burst of at least one MTU-sized frame plus the timer granularity; 32 kbit is enough
# for rates up to ~100 Mbit/s at HZ=1000, larger rates get rate/250.
MIN_BURST_BYTES = 4096
TBF_LATENCY_MS = 200


def _num(x: float) -> str:
    return f"{x:g}"


def netem_args(d: Direction) -> list[str]:
    args = ["delay", f"{_num(d.delay_ms)}ms"]
    if d.jitter_ms > 0:
        # Note: jittered netem may reorder packets whatever d.reorder says (a netem limitation).
        args += [f"{_num(d.jitter_ms)}ms"]
    if d.loss_pct > 0:
        if d.loss_burst > 1:
            # Gilbert-Elliott: mean burst length 1/r, stationary loss p/(p+r).
            r = 1.0 / d.loss_burst
            loss = d.loss_pct / 100.0
            p = min(1.0, loss * r / max(1e-9, 1.0 - loss))
            args += ["loss", "gemodel", f"{_num(round(p * 100, 4))}%", f"{_num(round(r * 100, 4))}%"]
        else:
            args += ["loss", "random", f"{_num(d.loss_pct)}%"]
    return args


def tbf_args(rate_kbit: int) -> list[str]:
    burst = max(MIN_BURST_BYTES, rate_kbit * 1000 // 8 // 250)
    return ["rate", f"{rate_kbit}kbit", "burst", str(burst), "latency", f"{TBF_LATENCY_MS}ms"]


def direction_lines(ifname: str, d: Direction, had_rate: bool = False) -> list[str]:
    """tc batch lines that make ifname's egress behave like direction d. `had_rate`: the
    direction had a rate before (a change at run time), so its tbf goes when d has none."""
    lines = [f"qdisc replace dev {ifname} root handle 1: netem " + " ".join(netem_args(d))]
    if d.rate_kbit:
        lines.append(f"qdisc replace dev {ifname} parent 1:1 handle 10: tbf " + " ".join(tbf_args(d.rate_kbit)))
    elif had_rate:
        lines.append(f"qdisc del dev {ifname} parent 1:1 handle 10:")
    return lines
