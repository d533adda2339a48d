"""A Flask app whose gunicorn gevent workers also run greenq jobs: request
handlers submit, each worker's GreenQueue runs them.

    gunicorn -c examples/gunicorn.conf.py -w 2 --pythonpath examples flask_app:app

    POST /jobs   {"task": ..., "resource": ..., "params": ..., "retries": 0} -> 201 {"id": ...}
    GET  /stats  the queue's stats

The queue is created at import and handed to greenq.contrib.gunicorn.serve(),
not started here: the hooks in gunicorn.conf.py start it in each worker and,
on gunicorn's SIGTERM, let running jobs finish before the worker exits.
Under a server without those hooks (`flask --app flask_app run`, a threaded
server) the same module only submits, which needs neither gevent nor start().

Settings come from $GREENQ_REDIS_URL (or $REDIS_URL), $GREENQ_NAMESPACE and
$GREENQ_WORKER_COUNT (jobs at a time per gunicorn worker).
"""

import os

from flask import Flask, request

from greenq import GreenQError, GreenQueue
from greenq.contrib import gunicorn as greenq_gunicorn

HERE = os.path.dirname(os.path.abspath(__file__))

queue = GreenQueue(namespace=os.environ.get("GREENQ_NAMESPACE", "greenq-flask"),
                   worker_count=int(os.environ.get("GREENQ_WORKER_COUNT", "100")))
queue.register_task(os.path.join(HERE, "tasks.py"))
greenq_gunicorn.serve(queue)

app = Flask(__name__)


@app.post("/jobs")
def submit_job():
    spec = request.get_json(force=True, silent=True)  # curl -d sends no JSON type
    if not isinstance(spec, dict) or "task" not in spec:
        return {"error": 'send a JSON object with "task"'}, 400
    try:
        job_id = queue.submit_job(spec["task"], resource_id=spec.get("resource"),
                                  params=spec.get("params"), retries=spec.get("retries", 0))
    except (TypeError, ValueError, GreenQError) as exc:  # bad arguments, nothing written
        return {"error": str(exc)}, 400
    return {"id": job_id}, 201


@app.get("/stats")
def stats():
    return queue.stats()
