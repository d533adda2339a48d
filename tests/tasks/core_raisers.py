"""Tasks that raise the BaseExceptions that are not Exceptions, and one that succeeds."""
import gevent

import greenq

done = []


@greenq.task("core.system_exit")
def system_exit(params):
    raise SystemExit(3)


@greenq.task("core.keyboard_interrupt")
def keyboard_interrupt(params):
    raise KeyboardInterrupt()


@greenq.task("core.greenlet_exit")
def greenlet_exit(params):
    raise gevent.GreenletExit()


@greenq.task("core.ok")
def ok(params):
    done.append(params)
