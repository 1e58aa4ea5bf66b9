# imgproxy-cache in one container: the caching proxy on :8080 and, behind it on 127.0.0.1:8081,
# either the bundled worker (`imgproxy-cache worker`, the default image) or the real imgproxy
# (target `with-imgproxy`, whose proxy is built without the worker and its codecs). supervisord
# runs both with the same supervisord.conf the end-to-end suite runs; if either process exits,
# the container stops.
#
#   docker build -t imgproxy-cache .                                   # proxy + bundled worker
#   docker build --target with-imgproxy -t imgproxy-cache:imgproxy .   # proxy + real imgproxy
#
# The last stage is the default target, so `bundled` stays last.

# Base of the with-imgproxy target. Declared before the first FROM: only such ARGs can be used in
# FROM lines.
ARG IMGPROXY_IMAGE=ghcr.io/imgproxy/imgproxy:v3

# ==================================================================================================
# Build: release binaries. Pinned to the toolchain in Cargo.toml's rust-version.
FROM rust:1.95-bookworm AS build-base

# cmake and nasm build the bundled libjpeg-turbo / libaom of the image codecs; pkg-config lets
# the -sys crates look for system libraries before building their own. (gcc, g++, perl and make
# are already in the rust image.) Versions are not pinned: the base tag fixes the Debian release,
# and exact pins break as soon as the mirror drops a superseded security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        cmake nasm pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Dependency layer: the builds below first build every dependency against stub sources, so that
# a change to src/ only rebuilds our own crate; the layer is reused as long as Cargo.toml and
# Cargo.lock don't change. Cargo.toml names the example `engine_bench`, so it is stubbed too and
# stays (if Cargo.toml ever names another build script, bench, test or example, stub it here).
COPY Cargo.toml Cargo.lock ./
RUN mkdir src examples \
    && echo 'fn main() {}' > src/main.rs \
    && cp src/main.rs examples/engine_bench.rs \
    && touch src/lib.rs

# The proxy and the bundled worker: every image codec.
FROM build-base AS builder
RUN cargo build --release --locked --bin imgproxy-cache && rm -rf src
COPY src ./src
# COPY may keep the files' modification times, which can be older than the stub build's
# fingerprints; touching them makes cargo rebuild our crate for certain.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin imgproxy-cache \
    && cp target/release/imgproxy-cache /usr/local/bin/imgproxy-cache

# The proxy alone (`--no-default-features`: no `worker` subcommand, no codecs to compile), for
# the with-imgproxy target, where imgproxy itself does the images.
FROM build-base AS builder-proxy
RUN cargo build --release --locked --no-default-features --bin imgproxy-cache && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --no-default-features --bin imgproxy-cache \
    && cp target/release/imgproxy-cache /usr/local/bin/imgproxy-cache

# ==================================================================================================
# Proxy + the real imgproxy, on the official image (the Go sidecar's way).
#
# ghcr.io/imgproxy/imgproxy:v3 follows the newest 3.x release (imgproxy publishes vX, vX.Y and
# vX.Y.Z tags; `latest` is 4.x now). Pin vX.Y.Z with --build-arg for reproducible builds. The
# image is Ubuntu 24.04 with imgproxy at /usr/local/bin/imgproxy, running as user `imgproxy`
# (uid 999); its own entrypoint.sh only applies IMGPROXY_MALLOC.
FROM ${IMGPROXY_IMAGE} AS with-imgproxy

# The official image ends with USER 999; installing packages needs root for a moment.
USER 0

# python3 runs supervisord and the exit listener; python3-venv because Ubuntu's python3 refuses
# pip installs outside a venv (PEP 668). ca-certificates is in the base image already.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/supervisor \
    && /opt/supervisor/bin/pip install --no-cache-dir supervisor==4.3.0

# The venv first on PATH: `supervisord`, and `python3` with supervisor importable (for the
# listener).
ENV PATH="/opt/supervisor/bin:${PATH}"

COPY --from=builder-proxy /usr/local/bin/imgproxy-cache /usr/local/bin/imgproxy-cache
COPY supervisord.conf /etc/imgproxy-cache/supervisord.conf
COPY docker/exit-listener.py /usr/local/lib/imgproxy-cache/exit-listener.py
COPY docker/entrypoint /usr/local/bin/docker-entrypoint

# chmod: the entrypoint must be executable even from a checkout that lost the mode bit.
# `--version`: fail the build now, not at start-up, if the binary misses a shared library here.
# The working directory: without S3_BUCKET the proxy keeps results in CACHE_DIR (./cache), so
# the non-root user needs a directory it may write.
RUN chmod 0755 /usr/local/bin/docker-entrypoint \
    && imgproxy-cache --version \
    && mkdir -p /var/lib/imgproxy-cache \
    && chown imgproxy:imgproxy /var/lib/imgproxy-cache
WORKDIR /var/lib/imgproxy-cache

# The worker program is imgproxy, started through the image's own entrypoint.sh so that
# IMGPROXY_MALLOC=jemalloc|tcmalloc keeps working (it preloads the allocator for imgproxy only,
# not for supervisord or the proxy). supervisord forces IMGPROXY_BIND=127.0.0.1:8081 for it.
ENV IMGPROXY_CACHE_WORKER_COMMAND="/usr/local/bin/entrypoint.sh imgproxy"

# Same user as the official image, so mounted volumes keep working when switching images.
# Numeric, so that orchestrators (Kubernetes runAsNonRoot) can check it is not root.
USER 999:999

EXPOSE 8080

# The proxy's own endpoint: 200 only when the proxy answers and imgproxy's /health does too.
# There is no curl in the image; python3 is there for supervisord anyway. The port follows
# IMGPROXY_BIND (the proxy's bind, default :8080).
HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 \
    CMD ["python3", "-c", "import os,urllib.request as u; p=os.environ.get('IMGPROXY_BIND',':8080').rsplit(':',1)[1]; u.urlopen('http://127.0.0.1:%s/_imgproxy-cache/health' % p, timeout=4)"]

# Replaces the base image's ENTRYPOINT; setting ENTRYPOINT also clears its CMD ["imgproxy"].
ENTRYPOINT ["/usr/local/bin/docker-entrypoint"]

# ==================================================================================================
# Proxy + bundled worker (the default target): the same binary runs both processes.
FROM debian:bookworm-slim AS bundled

# ca-certificates: the proxy (S3 over HTTPS) and the worker (https:// sources) verify TLS against
# the system roots. python3 + python3-venv: supervisord and the exit listener (supervisor from
# PyPI in a venv, pinned to the version the end-to-end suite runs). fonts-dejavu-core: the
# worker needs a font to keep and render <text> in SVG sources.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates fonts-dejavu-core python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/supervisor \
    && /opt/supervisor/bin/pip install --no-cache-dir supervisor==4.3.0

ENV PATH="/opt/supervisor/bin:${PATH}"

# A fixed non-root user; uid/gid 999 as in the official imgproxy image, so both targets own
# files the same way.
RUN groupadd --system --gid 999 imgproxy \
    && useradd --system --uid 999 --gid imgproxy --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin imgproxy

COPY --from=builder /usr/local/bin/imgproxy-cache /usr/local/bin/imgproxy-cache
COPY supervisord.conf /etc/imgproxy-cache/supervisord.conf
COPY docker/exit-listener.py /usr/local/lib/imgproxy-cache/exit-listener.py
COPY docker/entrypoint /usr/local/bin/docker-entrypoint

# As in the with-imgproxy target: executable entrypoint, loadable binary, writable CACHE_DIR.
RUN chmod 0755 /usr/local/bin/docker-entrypoint \
    && imgproxy-cache --version \
    && mkdir -p /var/lib/imgproxy-cache \
    && chown imgproxy:imgproxy /var/lib/imgproxy-cache
WORKDIR /var/lib/imgproxy-cache

ENV IMGPROXY_CACHE_WORKER_COMMAND="imgproxy-cache worker"

USER 999:999

EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 \
    CMD ["python3", "-c", "import os,urllib.request as u; p=os.environ.get('IMGPROXY_BIND',':8080').rsplit(':',1)[1]; u.urlopen('http://127.0.0.1:%s/_imgproxy-cache/health' % p, timeout=4)"]

ENTRYPOINT ["/usr/local/bin/docker-entrypoint"]
