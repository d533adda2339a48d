"""Puts into its own params, in place, values the master link cannot carry
as they are (no Redis). params["add"] lists which: "exotic" (a datetime, an
integer over 64 bits, a set, an object, a lone surrogate) and/or "tuple_key"
(a tuple as a dict key, which msgpack packs but cannot unpack as a key)."""
import datetime

id = "proc.mutate"
timeout = 1.0


class Thing:
    def __repr__(self):
        return "<Thing 7>"


class Unprintable:
    def __repr__(self):
        raise RuntimeError("no repr for you")


def perform(params):
    if "exotic" in params["add"]:
        params["when"] = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        params["big"] = 2**70
        params["tags"] = {"a"}
        params["nested"] = {"thing": Thing(), "kept": [1, b"\x00", None, 2.5]}
        params["unprintable"] = Unprintable()
        params["lone"] = "\ud800"
    if "tuple_key" in params["add"]:
        params[(1, ("a", 2))] = "tuple key"
