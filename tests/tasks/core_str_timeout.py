id = "core.str_timeout"
timeout = "10"


def perform(params):
    pass
