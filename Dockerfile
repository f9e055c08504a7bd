# syntax=docker/dockerfile:1
# The Switchboard gateway image: a release build of the `gateway` binary on Debian slim, run as an
# unprivileged user. Build with `docker build -t switchboard/gateway .` (BuildKit, the default).

# ---- build --------------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependencies first, in a layer that depends only on the manifests and the lock file: editing the
# code does not download every crate again. `cargo fetch` needs a target per crate, hence the
# empty stubs, removed before the real sources arrive.
COPY Cargo.toml Cargo.lock ./
COPY crates/protocol/Cargo.toml crates/protocol/
COPY crates/gateway/Cargo.toml crates/gateway/
COPY crates/testkit/Cargo.toml crates/testkit/
COPY crates/loadgen/Cargo.toml crates/loadgen/
RUN for crate in protocol gateway testkit loadgen; do \
        mkdir -p "crates/$crate/src" && touch "crates/$crate/src/lib.rs"; \
    done \
 && cargo fetch --locked \
 && rm -rf crates/*/src

# Then the code. Compiled dependencies live in a BuildKit cache mount, so a code change rebuilds
# only the workspace crates; the binary is copied out of the mount in the same step.
#
# The release profile keeps line tables for benchmarks and profiling (Cargo.toml); the image does
# not need them, so its copy loses its debug sections (69 MB -> 13 MB). The code is the benchmarked
# code, byte for byte, and the symbol table stays: a panic's backtrace still names functions.
COPY crates crates
RUN --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --offline -p switchboard-gateway \
 && install -D -m 0755 target/release/gateway /out/gateway \
 && strip --strip-debug /out/gateway

# ---- runtime ------------------------------------------------------------------------------------
# The same Debian release as the builder, so the binary finds the glibc it was linked against.
FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="switchboard-gateway" \
      org.opencontainers.image.description="Switchboard real-time WebSocket gateway" \
      org.opencontainers.image.licenses="Apache-2.0"

# ca-certificates only, for TLS to backends as they gain it (rediss://). The binary embeds its
# migrations and assets; it needs no other file.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 switchboard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin switchboard

COPY --from=builder /out/gateway /usr/local/bin/gateway

# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001

# Both listeners on all interfaces; the admin one (/healthz, /readyz, /metrics) is for probes and
# Prometheus only and must not be published.
ENV SWITCHBOARD_LISTEN=0.0.0.0:8080 \
    SWITCHBOARD_ADMIN_LISTEN=0.0.0.0:9090
EXPOSE 8080 9090

# SIGTERM starts the graceful drain (readyz 503, `server:shutdown`, close 1001, exit within
# SWITCHBOARD_DRAIN_TIMEOUT_MS); give the container longer than that to stop.
STOPSIGNAL SIGTERM

# No HEALTHCHECK: the slim image has no HTTP client (curl or wget would add size and attack surface
# for this alone) and the gateway has no self-probe command. Kubernetes probes /readyz and /healthz
# on the admin port itself (deploy/k8s/deployment.yaml); in docker-compose nginx's passive health
# checks take a failing node out of rotation.
ENTRYPOINT ["/usr/local/bin/gateway"]
