# logexport: `serve` runs the API, console and (unless --no-worker) an export worker.
# Configure it with the LOGEXPORT_* variables (see README); run `logexport migrate` first:
#   docker build -t logexport .
#   docker run --rm --env-file logexport.env logexport logexport migrate
#   docker run -d -p 8000:8000 --env-file logexport.env logexport
# The Python 3.11 image matches the interpreter requirements-runtime.lock was resolved for.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --create-home --uid 10001 logexport

WORKDIR /src
# Dependencies come from the lock alone, every file checked against its hash, so an image
# built next month gets today's versions; this layer is rebuilt only when the lock changes.
COPY requirements-runtime.lock ./
RUN pip install --require-hashes -r requirements-runtime.lock
COPY pyproject.toml README.md LICENSE schema.graphql ./
COPY sql ./sql
COPY logexport ./logexport
RUN pip install --no-deps . && rm -rf /src

WORKDIR /home/logexport
USER 10001

# Inside a container the published port arrives on the container's own interface, so the
# server listens on all of them here; outside the image `serve` defaults to 127.0.0.1.
ENV LOGEXPORT_HOST=0.0.0.0 \
    LOGEXPORT_PORT=8000 \
    LOGEXPORT_SHUTDOWN_GRACE=4s
# On `docker stop` the server first lets open requests finish, then gives running exports
# the same grace before handing them back to the queue for another worker: at most twice
# LOGEXPORT_SHUTDOWN_GRACE, which fits Docker's default 10 s stop timeout. Raising the grace
# needs a matching `docker run --stop-timeout` (more than twice the grace, plus 2 s).
STOPSIGNAL SIGTERM
EXPOSE 8000

# The slim image has no curl; urlopen raises (exit 1) on a refused connection or a non-2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LOGEXPORT_PORT', '8000') + '/healthz', timeout=4)"]

CMD ["logexport", "serve"]
