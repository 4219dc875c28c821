"""xsquare_logger: robot-side data logger and teleop recorder for humanoid robots."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
