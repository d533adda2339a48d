"""gunicorn config for an app that runs greenq jobs in its workers
(examples/flask_app.py):

    gunicorn -c examples/gunicorn.conf.py -w 2 --pythonpath examples flask_app:app

SIGTERM to the gunicorn master: workers stop taking requests and jobs, and
running jobs finish; those still running 2 s before graceful_timeout go
back to the queue. SIGINT or SIGQUIT (also after a SIGTERM): running jobs
go back to the queue at once. greenq logs through gunicorn's error log.
"""

from greenq.contrib.gunicorn import post_worker_init, worker_abort, worker_exit, worker_int

worker_class = "gevent"  # greenq runs on gevent; the hooks refuse other worker classes
graceful_timeout = 30    # seconds running jobs get after SIGTERM (gunicorn's default)

__all__ = ["post_worker_init", "worker_int", "worker_abort", "worker_exit"]
