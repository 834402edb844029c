# The worker/scheduler image for the local stack (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AGENTQ_SQLITE_PATH=/data/agentq.db

WORKDIR /app

# The exact versions of requirements.lock (`make lock`), checked against their hashes; this layer
# is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# The project itself, its dependencies already in place. .dockerignore keeps secrets, the git
# history, local databases and virtualenvs out of the build context.
COPY . .
RUN pip install --no-deps . \
    && useradd --system --create-home --uid 10001 agentq \
    && mkdir -p /data \
    && chown agentq /data

# Not root: the code stays read-only to the process that runs the agents.
USER agentq
CMD ["dramatiq", "actors", "--processes", "1", "--threads", "5"]
