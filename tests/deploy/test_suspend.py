"""Dense mode's per-node pause (toolkit/deploy/suspend.py) on a real asyncio loop with real loopback
servers: a paused node answers nothing, fires no timer and resets no connection; its neighbour in the
same loop keeps serving; after resume everything the paused node owed arrives."""

from __future__ import annotations

import asyncio

from toolkit.deploy.suspend import NODE, Suspender


async def _echo_node(name: str, ticks: list[str]) -> asyncio.AbstractServer:
    """A 'node': a line-echo server on loopback and a 20 ms timer, all scheduled in its context."""
    NODE.set(name)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(name.encode() + b":" + line)
            await writer.drain()
        writer.close()

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.02)
            ticks.append(name)

    asyncio.get_running_loop().create_task(tick())
    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _ask(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, text: bytes, timeout_s: float) -> bytes:
    writer.write(text + b"\n")
    await writer.drain()
    return await asyncio.wait_for(reader.readline(), timeout_s)


async def _scenario() -> None:
    suspender = Suspender(asyncio.get_running_loop())
    ticks: list[str] = []
    a = await asyncio.create_task(_echo_node("a", ticks))
    b = await asyncio.create_task(_echo_node("b", ticks))
    port_a, port_b = (s.sockets[0].getsockname()[1] for s in (a, b))
    ra, wa = await asyncio.open_connection("127.0.0.1", port_a)  # opened before the pause
    rb, wb = await asyncio.open_connection("127.0.0.1", port_b)
    assert await _ask(wa, ra, b"hi", 2) == b"a:hi\n"

    suspender.pause("a")
    assert suspender.paused("a") and not suspender.paused("b")
    ticks.clear()
    # an open connection gets no answer, and is not reset
    try:
        await _ask(wa, ra, b"still there?", 0.3)
        raise AssertionError("a paused node answered")
    except TimeoutError:
        pass
    # a new connection is accepted by the kernel (the backlog, as for a stopped process) but not served
    r2, w2 = await asyncio.open_connection("127.0.0.1", port_a)
    try:
        await _ask(w2, r2, b"new", 0.3)
        raise AssertionError("a paused node served a new connection")
    except TimeoutError:
        pass
    # its neighbour in the same loop is not affected; the paused node's timer does not fire
    assert await _ask(wb, rb, b"ping", 2) == b"b:ping\n"
    await asyncio.sleep(0.1)
    assert "b" in ticks and "a" not in ticks

    suspender.resume("a")
    # what the paused node owed arrives, in order, on the same connections
    assert await asyncio.wait_for(ra.readline(), 2) == b"a:still there?\n"
    assert await asyncio.wait_for(r2.readline(), 2) == b"a:new\n"
    assert await _ask(wa, ra, b"back", 2) == b"a:back\n"
    await asyncio.sleep(0.1)
    assert "a" in ticks
    for w in (wa, wb, w2):
        w.close()
    for s in (a, b):
        s.close()
    for t in asyncio.all_tasks() - {asyncio.current_task()}:
        t.cancel()


def test_pause_one_node_of_a_shared_loop() -> None:
    asyncio.run(_scenario())
