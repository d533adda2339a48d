"""Imports a decorated task of another module (core_decorated's `add`, by
its dotted name) beside a decorated task of its own."""
import greenq
from tasks.core_decorated import add  # noqa: F401  (the other module's task)


@greenq.task("core.own")
def own(params):
    return params
