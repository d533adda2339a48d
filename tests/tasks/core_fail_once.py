"""Fails the first run for each params["key"] (every run when params["always"]),
succeeds after. `runs` lists (key, "fail"|"ok") in order."""
id = "core.fail_once"
runs = []
_failed = set()


def perform(params):
    key = params["key"]
    if params.get("always") or (params.get("fail", True) and key not in _failed):
        _failed.add(key)
        runs.append((key, "fail"))
        raise RuntimeError(f"boom {key}")
    runs.append((key, "ok"))
