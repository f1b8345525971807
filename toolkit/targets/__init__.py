"""Where a command runs: one small interface (`Target`) with local, network-namespace and SSH
(`ssh.SshTarget`, paramiko, imported on use) implementations. Deployers and launchers start processes and write files through it."""

from .base import Completed, Target
from .local import LocalTarget
from .netns import NetnsTarget

__all__ = ["Completed", "LocalTarget", "NetnsTarget", "Target"]
