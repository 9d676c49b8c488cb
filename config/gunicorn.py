"""gunicorn's settings for KeyCore: ``gunicorn -c config/gunicorn.py config.wsgi --bind … --workers …``.

Hooks only; where to listen and how many workers stay on the command line.

Once a worker has loaded Django, every object it made moves to the garbage collector's permanent
generation (``gc.freeze()``): otherwise each full collection re-walks ~100k long-lived objects, 17–35 ms
per 1,000-item batch and most of the p99 of single calls (docs/benchmarks.md, "REST API").

gunicorn's workers are separate processes, so Prometheus counts go to files in ``PROMETHEUS_MULTIPROC_DIR``
(a fresh temporary folder when the environment names none), which a scrape of any worker sums: the folder
is emptied when the server starts, and a worker that exits is marked dead.
"""

import os
import tempfile

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # before any worker imports prometheus_client, which reads the variable once
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="keycore-metrics-")


def post_worker_init(worker):
    import gc

    gc.freeze()


def on_starting(server):
    from keycore.metrics import clear_multiprocess_dir

    clear_multiprocess_dir()


def child_exit(server, worker):
    from keycore.metrics import mark_process_dead

    mark_process_dead(worker.pid)
