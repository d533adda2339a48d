"""Succeeds, or raises ValueError when params has a true "fail" (no Redis)."""
id = "proc.outcome"
timeout = 1.0


def perform(params):
    if isinstance(params, dict) and params.get("fail"):
        raise ValueError(f"asked to fail: {params['fail']}")
