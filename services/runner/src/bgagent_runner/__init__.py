"""The bgagent runner: claims submitted tasks and drives Claude with client tools in a workspace."""

from .settings import Settings
from .worker import Runner

__all__ = ["Runner", "Settings"]
