"""Records its params in `seen`, for in-process tests."""
id = "echo"
seen = []


def perform(params):
    seen.append(params)
