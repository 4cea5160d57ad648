# ASCOM Alpaca focuser server. python:3.11-slim is multi-arch, so this builds as is on amd64, arm64 and armv7
# (every dependency has a pure-Python wheel: no compiler needed). See README "Run in Docker" for `docker run`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir . \
    && rm -rf /src

# Non-root; dialout (gid 20 here and on Raspberry Pi OS) owns the serial device passed with --device.
RUN groupadd --system alpaca \
    && useradd --system --gid alpaca --groups dialout --no-create-home --home-dir /data \
        --shell /usr/sbin/nologin alpaca \
    && mkdir -p /data \
    && chown alpaca:alpaca /data

# State (UniqueIDs, last positions) lives in the volume so a new container keeps the same device identity.
ENV STATE_DIRECTORY=/data
VOLUME ["/data"]
WORKDIR /data
USER alpaca

# 11111: Alpaca HTTP API; 32227: discovery (needs --network host to hear LAN broadcasts, see README).
EXPOSE 11111/tcp 32227/udp

HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 CMD ["alpaca-focuser", "healthcheck"]

STOPSIGNAL SIGTERM

# The config: /data/config.toml when it exists, else one mounted at /etc/alpaca-focuser/config.toml, else the
# built-in defaults (one simulated focuser), in which case the setup page's first Save creates /data/config.toml
# in the volume ($STATE_DIRECTORY), which the next start reads. No config is baked into the image: a file there
# could not be saved to, and a save into the container's own layer would be lost with the container.
# exec: the server itself is the container's main process, so it receives SIGTERM and shuts down cleanly.
CMD ["sh", "-c", "if [ -f /data/config.toml ]; then exec alpaca-focuser --config /data/config.toml; elif [ -f /etc/alpaca-focuser/config.toml ]; then exec alpaca-focuser --config /etc/alpaca-focuser/config.toml; else exec alpaca-focuser; fi"]
