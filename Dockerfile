# lanes: one image for every role (`lanes up|server|worker|submit|...`).

# ---- build ------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

# Build the dependencies alone first, against stub sources, so this layer is
# cached until Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# Now the real sources (migrations are embedded at compile time). touch makes
# sure cargo rebuilds the crate itself instead of reusing the stub's artifacts.
COPY . .
# The commit `lanes --version` names (the context has no .git): docker build --build-arg
# LANES_COMMIT=$(git rev-parse --short=12 HEAD).
ARG LANES_COMMIT=unknown
ENV SQLX_OFFLINE=true LANES_COMMIT=${LANES_COMMIT}
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -m 0755 target/release/lanes /usr/local/bin/lanes

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin lanes
USER lanes
# Listen on all interfaces inside the container (the default is 127.0.0.1).
ENV LANES_HTTP_ADDR=0.0.0.0:8080 \
    RUST_LOG=info
EXPOSE 8080

# For the roles that serve HTTP (up, server); docker-compose.yml disables it
# for workers.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1

ENTRYPOINT ["lanes"]
CMD ["up"]

# ---- prebuilt: a binary built elsewhere (Debian bookworm or older glibc), for machines with
# no Rust image at hand. The build context is a directory that holds it as `lanes`:
#   mkdir ctx && cp target/release/lanes ctx/ && docker build --target prebuilt -f Dockerfile ctx
FROM runtime AS prebuilt
ARG LANES_BINARY=lanes
COPY ${LANES_BINARY} /usr/local/bin/lanes

# ---- the default image: built from source above
FROM runtime
COPY --from=builder /usr/local/bin/lanes /usr/local/bin/lanes
