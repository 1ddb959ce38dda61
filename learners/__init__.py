"""eddy's online learners: a library usable from river or a notebook, with no runtime dependency."""

from .base import InvalidInput, Learner, create, family_of, names, register

__all__ = ["InvalidInput", "Learner", "create", "family_of", "names", "register"]
