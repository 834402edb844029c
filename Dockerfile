# The worker/scheduler image for the local stack (docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
CMD ["dramatiq", "actors", "--processes", "1", "--threads", "5"]
