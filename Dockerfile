# tierstream worker and API image (used by docker-compose.yml).
FROM python:3.11-slim
# openssl: `tierstream certificates`, which docker-compose.secured.yml runs
# to make a trial CA (tests/unit/test_packaging.py keeps this file and
# pyproject.toml's package list in step).
RUN apt-get update && apt-get install -y --no-install-recommends openssl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream stream
COPY agents agents
COPY engine engine
COPY state state
COPY store store
COPY api api
COPY cli cli
RUN pip install --no-cache-dir .
ENTRYPOINT ["tierstream"]
CMD ["worker"]
