"""Online linear regression oracles shared by the learner families (ridge via Sherman–Morrison)."""

from .ridge import OnlineRidge

__all__ = ["OnlineRidge"]
