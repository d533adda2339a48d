"""Tasks that end in every BaseException that is not an Exception, and one
that succeeds. Each run first appends "<task id> <params['n']>" to the
O_APPEND file params["log"], so the test sees every run, retries included."""
import os

import gevent

import greenq


def _record(params, what):
    fd = os.open(params["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{what} {params['n']}\n".encode())
    finally:
        os.close(fd)


@greenq.task("fault.scale.system_exit")
def system_exit(params):
    _record(params, "fault.scale.system_exit")
    raise SystemExit(3)


@greenq.task("fault.scale.keyboard_interrupt")
def keyboard_interrupt(params):
    _record(params, "fault.scale.keyboard_interrupt")
    raise KeyboardInterrupt()


@greenq.task("fault.scale.greenlet_exit")
def greenlet_exit(params):
    _record(params, "fault.scale.greenlet_exit")
    raise gevent.GreenletExit()


@greenq.task("fault.scale.gevent_timeout")
def gevent_timeout(params):
    _record(params, "fault.scale.gevent_timeout")
    with gevent.Timeout(0.01):  # a Timeout the task does not catch is a BaseException too
        gevent.sleep(5)


@greenq.task("fault.scale.ok")
def ok(params):
    _record(params, "fault.scale.ok")
