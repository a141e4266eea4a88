# An image with your own worker (a binary of your crate that calls `lanes::worker::run`, like
# examples/custom_worker.rs). Build it from your crate's root:
#
#   docker build -f worker.Dockerfile --build-arg BIN=my_worker -t my-worker .
#
# and run it beside the lanes server in docker-compose.yml, in place of (or next to) the
# `worker` service, with the same LANES_* variables.

FROM rust:1-bookworm AS builder
ARG BIN
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin "$BIN" \
    && install -m 0755 "target/release/$BIN" /usr/local/bin/worker

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin lanes
COPY --from=builder /usr/local/bin/worker /usr/local/bin/worker
USER lanes
ENV RUST_LOG=info
# A worker serves no HTTP; it stops on SIGTERM after draining (LANES_DRAIN_GRACE_MS).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/worker"]
