# gunicorn settings of the suite's Python services (bind and threads come from
# the command line). One worker process with threads: the process that
# `opentelemetry-instrument` set up forks this one worker, and the SDK's batch
# span processor restarts its export thread in the child (it registers an
# at-fork hook), so the worker exports as a single process would. With more
# worker processes, each would need its own tracer provider set up in
# post_fork (see OpenTelemetry Python's "Working with fork process models").
workers = 1
worker_class = "gthread"
timeout = 60
graceful_timeout = 5
accesslog = None
loglevel = "warning"
