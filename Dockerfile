# tierstream worker and API image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream stream
COPY agents agents
COPY state state
COPY api api
COPY cli cli
RUN pip install --no-cache-dir .
ENTRYPOINT ["tierstream"]
CMD ["worker"]
