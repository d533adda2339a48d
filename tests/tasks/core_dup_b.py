id = "core.dup"


def perform(params):
    pass
