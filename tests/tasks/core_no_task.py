"""Defines no task at all."""
VALUE = 1
