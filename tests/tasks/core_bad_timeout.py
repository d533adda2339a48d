id = "core.bad_timeout"
timeout = -1


def perform(params):
    pass
