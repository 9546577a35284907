# arena_rt server image. Production mode: set DATABASE_URL, REDIS_URL and ARENA_SECRET.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    ARENA_SCHEMA_DIR=/app/schema ARENA_DATA_DIR=/data

RUN useradd --create-home --uid 10001 arena && mkdir -p /app /data && chown arena /data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY arena_rt ./arena_rt
COPY schema ./schema
RUN pip install --no-compile .

USER arena
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["arena-rt", "serve", "--host", "0.0.0.0", "--port", "8000"]
