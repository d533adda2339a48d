"""examples/flask_app.py as tests/test_gunicorn.py runs it under gunicorn:
the example's app and queue, plus the fault suite's witness task
(fault.log, tests/tasks/fault_log_sleep.py), whose side log shows which
gunicorn worker ran each job and whether it ran to its end.

    gunicorn -c examples/gunicorn.conf.py --pythonpath tests/tasks gunicorn_app:app
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples"))

from flask_app import app, queue  # noqa: E402

# Registered at import, before the post_worker_init hook starts the queue.
queue.register_task(os.path.join(HERE, "fault_log_sleep.py"))

__all__ = ["app", "queue"]
