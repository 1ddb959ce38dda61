"""The built-in family adapters (each registers itself on import; see :mod:`daemon.family`)."""

from . import bandit, groupwise, paging, sor, submodular  # noqa: F401
