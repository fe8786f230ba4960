# The aggregator (ingest, DuckDB store, API) in a container, after the seed's python:3.11-slim
# image, running as a non-root user. Build from the repository root:
#   docker build -t legion-monitor .
# Mount a setup made by `legionctl init --dir DIR` (config, keys, TLS) at /etc/legion; the DuckDB
# file and the rest of the state go to the /var/lib/legion volume. See compose.yaml.

# Stage 1: the pure-Python wheel (nothing in it is compiled, so no compiler in the final image).
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY legion ./legion
COPY proto ./proto
COPY node_agent ./node_agent
COPY aggregator ./aggregator
COPY analytics ./analytics
RUN pip install --no-cache-dir build==1.2.2 setuptools==75.8.0 wheel==0.45.1 \
    && python -m build --wheel --no-isolation --outdir /dist

# Stage 2: the runtime.
FROM python:3.11-slim
ARG LEGION_UID=10001
RUN groupadd --system --gid "${LEGION_UID}" legion \
    && useradd --system --uid "${LEGION_UID}" --gid legion --home-dir /var/lib/legion \
       --shell /usr/sbin/nologin legion \
    && install -d -o root -g legion -m 0750 /etc/legion \
    && install -d -o legion -g legion -m 0750 /var/lib/legion
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/legion_monitor-0.1.0-py3-none-any.whl \
    && rm -rf /tmp/dist
USER ${LEGION_UID}:${LEGION_UID}
WORKDIR /var/lib/legion
ENV PYTHONUNBUFFERED=1 LEGION_CONFIG=/etc/legion/monitoring_config.json
VOLUME ["/var/lib/legion"]
# ingest, acks (agents connect here), API/dashboard, analytics jobs and results (workers)
EXPOSE 5555 5556 8765 5558 5559
# SIGTERM drains: queued batches are committed, then acknowledged; DuckDB is checkpointed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["legionctl"]
CMD ["aggregator", "run"]
