"""Emulated testbeds: a topology brought up as network namespaces on this machine.

`Testbed` (toolkit.testbed.testbed) is the Python API; `commands.register(app)` adds the CLI
commands; plan.py plans, executor.py applies and cleans up, state.py keeps the journal. The
userspace link emulator lives in wire*.py. See docs/testbed.md.
"""

__all__ = ["Testbed"]


def __getattr__(name: str) -> object:
    # Imported on first use, so that the wire process (toolkit.testbed.wire) does not load the
    # planner, the executor and their dependencies.
    if name == "Testbed":
        from .testbed import Testbed

        return Testbed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
