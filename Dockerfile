# syntax=docker/dockerfile:1
# The Chronos image: one image for both roles, `chronos api` and `chronos worker`, chosen by the command.
# Build: docker build -t chronos .   Run it with docker-compose.yml (docs/operations.md).

FROM python:3.11-slim AS build
RUN python -m venv /opt/chronos
ENV PATH=/opt/chronos/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip pip install .

FROM python:3.11-slim
COPY --from=build /opt/chronos /opt/chronos
# CHRONOS_DATA_DIR is the non-root user's home: the only place the app may write (it stays empty on PostgreSQL).
ENV PATH=/opt/chronos/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CHRONOS_DATA_DIR=/var/lib/chronos
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/chronos chronos
USER chronos
WORKDIR /var/lib/chronos
EXPOSE 8000
ENTRYPOINT ["chronos"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
