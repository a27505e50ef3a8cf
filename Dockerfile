# syntax=docker/dockerfile:1
# Multi-stage build: a Rust builder, then a slim Debian runtime running as a non-root user.
# Health is probed by Kubernetes (/healthz, /readyz on [server] health_addr), so no HEALTHCHECK here.

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# Everything is pure Rust (rustls, bundled SQLite, bundled font): no system libraries are needed. Time zone
# data is compiled in (chrono-tz), so the runtime needs no tzdata package.
COPY Cargo.toml Cargo.lock ./
# The migrations live in their owners' crates (crates/*/migrations) and are embedded at compile time.
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p snowpatrol \
 && install -d /out \
 && objcopy --only-keep-debug target/release/snowpatrol /out/snowpatrol.debug \
 && objcopy --strip-debug --strip-unneeded --add-gnu-debuglink=/out/snowpatrol.debug \
      target/release/snowpatrol /out/snowpatrol \
 && chmod 0755 /out/snowpatrol
# The image ships the stripped binary (about a fifth of the unstripped size); the line tables stay in the
# builder stage's /out/snowpatrol.debug (`docker build --target builder` and copy it out to symbolize a crash).


FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 snowpatrol \
 && useradd --system --uid 10001 --gid snowpatrol --home-dir /var/lib/snowpatrol --shell /usr/sbin/nologin snowpatrol \
 && install -d -o snowpatrol -g snowpatrol -m 0750 /var/lib/snowpatrol /etc/snowpatrol
COPY --from=builder /out/snowpatrol /usr/local/bin/snowpatrol
COPY config/snowpatrol.toml /etc/snowpatrol/snowpatrol.toml
ENV SNOWPATROL_CONFIG=/etc/snowpatrol/snowpatrol.toml \
    SNOWPATROL_DATA_DIR=/var/lib/snowpatrol \
    SNOWPATROL__SERVER__HEALTH_ADDR=0.0.0.0:9187 \
    SNOWPATROL__LOGGING__FORMAT=json
USER 10001:10001
WORKDIR /var/lib/snowpatrol
VOLUME ["/var/lib/snowpatrol"]
EXPOSE 9187
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/snowpatrol"]
CMD ["daemon"]
