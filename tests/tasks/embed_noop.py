id = "embed.noop"


def perform(params):
    return None
