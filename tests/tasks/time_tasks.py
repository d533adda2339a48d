"""Tasks for the time tests: a plain one and a rate-limited one."""
import greenq

seen = []


@greenq.task("time.echo")
def echo(params):
    seen.append(params)
    return params


@greenq.task("time.limited", rate_limit="5/s")
def limited(params):
    seen.append(params)
    return params
