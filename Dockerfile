# syntax=docker/dockerfile:1
# slotgate container image (multi-stage).
#   docker build -t slotgate .
#   docker run --rm -p 6380:6380 slotgate --listen 0.0.0.0:6380 --cluster HOST:PORT[,HOST:PORT...]
# See docker-compose.cluster.yml for a complete 6-node Redis Cluster + slotgate.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# Cache mounts keep the crates registry and build artefacts across builds
# (BuildKit); the binary is copied out because the target/ mount is not in the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/slotgate /usr/local/bin/slotgate

FROM debian:bookworm-slim
# redis-tools provides redis-cli for the health check (redis-cli -p 6380 ping).
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-tools \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 slotgate \
    && useradd --system --uid 10001 --gid slotgate --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin slotgate
COPY --from=builder /usr/local/bin/slotgate /usr/local/bin/slotgate
USER 10001:10001
EXPOSE 6380
ENTRYPOINT ["slotgate"]
CMD ["--listen", "0.0.0.0:6380", "--cluster", "redis-1:6379"]
