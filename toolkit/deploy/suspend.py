"""Dense mode's SIGSTOP/SIGCONT for one node among many in one asyncio loop.

A dense host runs each node's start hook with `NODE` set to the node's device. Every asyncio
callback carries the context it was scheduled in (tasks copy theirs at creation, selector and timer
handles at registration), so every callback the node's code ever schedules (its tasks, timers,
accepted connections, outgoing connections) carries the node's name.

`Suspender.pause(node)` then does what SIGSTOP does to a process, for that node only:
- its file descriptors leave the loop's selector: the kernel still completes handshakes into the
  listeners' backlogs and acknowledges data into socket buffers, as for a stopped process, but
  nothing is accepted, read or answered, and no connection is reset;
- its callbacks (task steps, due timers, I/O callbacks already queued) are held back, in order.
`resume(node)` gives the descriptors back to the selector and queues the held callbacks again; timers
that fell due meanwhile fire at once, as after SIGCONT.

Not frozen (a stopped process would be): a blocking call the node already handed to a thread (an
SQLite commit in flight) finishes. This works on asyncio's own loop (Python 3.11-3.13: its `_ready`
deque and `_selector`); `install` checks them and refuses any other loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import selectors
from typing import Any

NODE: contextvars.ContextVar[str | None] = contextvars.ContextVar("cnlab_node", default=None)


def _node_of(handle: Any) -> str | None:
    ctx = getattr(handle, "_context", None)
    return ctx.get(NODE) if ctx is not None else None


class _GatedReady(collections.deque[Any]):
    """The loop's ready queue: a paused node's callbacks are held back instead of run."""

    def __init__(self, items: Any, suspender: Suspender):
        super().__init__(items)
        self.suspender = suspender

    def popleft(self) -> Any:
        handle = super().popleft()
        held = self.suspender.held
        if held:
            node = _node_of(handle)
            if node in held:
                held[node].append(handle)
                return self.suspender.skip  # cancelled: the loop passes over it
        return handle


class Suspender:
    """Pause and resume the nodes of one asyncio loop (see the module's doc)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        ready, selector = getattr(loop, "_ready", None), getattr(loop, "_selector", None)
        if not isinstance(ready, collections.deque) or not isinstance(selector, selectors.BaseSelector):
            raise RuntimeError(f"cannot pause single nodes on {type(loop).__name__}: it is not asyncio's own loop")
        self.loop = loop
        self.selector: selectors.BaseSelector = selector
        self.held: dict[str, list[Any]] = {}  # paused node -> its callbacks, in order
        self.keys: dict[str, list[selectors.SelectorKey]] = {}  # paused node -> its descriptors
        self.skip = asyncio.Handle(lambda: None, (), loop)
        self.skip.cancel()
        loop._ready = _GatedReady(ready, self)  # type: ignore[attr-defined]

    def paused(self, node: str) -> bool:
        return node in self.held

    def pause(self, node: str) -> None:
        if node in self.held:
            return
        self.held[node] = []
        keys = []
        for key in list(self.selector.get_map().values()):
            if any(_node_of(h) == node for h in key.data if h is not None):
                self.selector.unregister(key.fileobj)
                keys.append(key)
        self.keys[node] = keys

    def resume(self, node: str) -> None:
        if node not in self.held:
            return
        for key in self.keys.pop(node):
            self.selector.register(key.fileobj, key.events, key.data)
        ready: collections.deque[Any] = self.loop._ready  # type: ignore[attr-defined]
        ready.extend(self.held.pop(node))
