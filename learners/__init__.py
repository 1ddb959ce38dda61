"""eddy's online learners: a library usable from river or a notebook, with no runtime dependency."""

from .base import Column, Decider, InvalidInput, Learner, Tracker, create, family_of, names, register

__all__ = ["Column", "Decider", "InvalidInput", "Learner", "Tracker", "create", "family_of", "names", "register"]
