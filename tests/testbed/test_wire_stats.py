"""The wire's stats reply is served in pieces of a few links (the data path runs between them),
and the pieces make exactly the reply the whole would have been. No root needed: the engine's
links are built without sockets."""

from __future__ import annotations

import json

from toolkit.topology.model import Direction
from toolkit.wire.control import STATS_PIECE_LINKS, handle_request, stats_pieces, wants_stats
from toolkit.wire.engine import Engine, Flow, WireLink
from toolkit.wire.shaping import Shaper, make_rng
from toolkit.wire.spec import LinkSpec, WireSpec


def engine_with_links(n: int) -> Engine:
    links = tuple(
        LinkSpec(f"d{i}~d{i + 1}", f"w{i}a", f"w{i}b", Direction(delay_ms=i), Direction(rate_kbit=1000 + i))
        for i in range(n)
    )
    engine = Engine(WireSpec(7, links))
    for ls in links:  # what Engine.open does, minus the sockets
        fwd = Flow(ls.id, "forward", Shaper(ls.forward, make_rng(7, ls.id, "forward"), ls.up), None)  # type: ignore[arg-type]
        rev = Flow(ls.id, "reverse", Shaper(ls.reverse, make_rng(7, ls.id, "reverse"), ls.up), None)  # type: ignore[arg-type]
        fwd.stats.received, rev.stats.forwarded = 10 * len(engine.links), 3
        fwd.stats.lateness.observe(0.0003)
        engine.links[ls.id] = WireLink(ls, fwd, rev)
    return engine


def test_stats_pieces_join_to_the_whole_reply():
    for n in (0, 1, STATS_PIECE_LINKS, STATS_PIECE_LINKS + 1, 50):
        engine = engine_with_links(n)
        pieces = list(stats_pieces(engine))
        assert pieces[-1].endswith(b"\n") and b"\n" not in b"".join(pieces)[:-1]
        reply = json.loads(b"".join(pieces))
        whole = {"ok": True, **engine.stats()}
        reply.pop("uptime_s"), whole.pop("uptime_s")
        assert reply == whole
        assert list(reply["links"]) == [f"d{i}~d{i + 1}" for i in range(n)]
        # a header, one piece per STATS_PIECE_LINKS links, a tail
        assert len(pieces) == 2 + -(-n // STATS_PIECE_LINKS)
        if n > 3:
            assert reply["links"]["d3~d4"]["config"]["forward"]["delay_ms"] == 3
            assert reply["links"]["d3~d4"]["config"]["reverse"]["rate_kbit"] == 1003


def test_only_stats_requests_are_served_in_pieces():
    assert wants_stats(b'{"op": "stats"}\n')
    assert not wants_stats(b'{"op": "ping"}')
    assert not wants_stats(b"stats")
    assert not wants_stats(b'["stats"]')
    reply = handle_request(engine_with_links(3), b'{"op": "stats"}', lambda: None)
    assert reply["ok"] is True and len(reply["links"]) == 3
    assert reply["links"]["d1~d2"]["forward"]["received"] == 10
