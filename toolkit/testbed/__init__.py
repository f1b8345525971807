"""Emulated testbeds: a topology brought up as network namespaces on this machine.

`Testbed` (toolkit.testbed.testbed) is the Python API; plan.py plans, executor.py applies and
cleans up, state.py keeps the journal, shapers/ make links behave (the userspace link emulator
itself is the package toolkit.wire). See docs/testbed.md.
"""

from .testbed import Testbed

__all__ = ["Testbed"]
