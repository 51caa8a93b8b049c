# logexport: `serve` runs the API, console and (unless --no-worker) an export worker.
# Configure it with the LOGEXPORT_* variables (see README); run `logexport migrate` first.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --create-home --uid 10001 logexport

WORKDIR /src
COPY pyproject.toml README.md schema.graphql ./
COPY sql ./sql
COPY logexport ./logexport
RUN pip install . && rm -rf /src

WORKDIR /home/logexport
USER logexport
EXPOSE 8000
CMD ["logexport", "serve"]
