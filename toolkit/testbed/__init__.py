"""Emulated testbeds: a topology brought up as network namespaces on this machine.

`Testbed` (toolkit.testbed.testbed) is the Python API; `commands.register(app)` adds the CLI
commands; plan.py plans, executor.py applies and cleans up, state.py keeps the journal. The
userspace link emulator lives in wire*.py. See docs/testbed.md.
"""

from .testbed import Testbed

__all__ = ["Testbed"]
