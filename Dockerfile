FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first, so code changes reuse this layer.
COPY pyproject.toml README.md ./
RUN mkdir app integrations flows && touch app/__init__.py integrations/__init__.py flows/__init__.py \
    && pip install --editable . && rm -rf app integrations flows

COPY . .
RUN pip install --no-deps --editable . && useradd --create-home rebound
USER rebound

EXPOSE 8000
CMD ["rebound", "api"]
