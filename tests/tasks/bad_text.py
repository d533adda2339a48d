"""Raises an error whose text is not valid Unicode: a file name that is not
UTF-8, as os.fsdecode gives it (with a lone surrogate)."""
import os

id = "bad.text"


def perform(params):
    raise OSError(f"cannot open {os.fsdecode(b'caf' + bytes([0xe9]) + b'.txt')}")
