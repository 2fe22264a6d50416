"""Hypergradient methods: small, immutable strategy values passed to :func:`hgrad.hypergrad`."""

from hgrad.methods.base import Method
from hgrad.methods.checkpointed import Checkpointed
from hgrad.methods.forward import Forward
from hgrad.methods.reverse import Reverse
from hgrad.methods.truncated import Truncated

__all__ = ["Method", "Reverse", "Checkpointed", "Forward", "Truncated"]
