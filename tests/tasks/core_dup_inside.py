"""One file whose module task and decorated task share an id."""
import greenq

id = "core.twice"


def perform(params):
    pass


@greenq.task("core.twice")
def again(params):
    pass
