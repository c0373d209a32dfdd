# Multi-stage build of the four binaries (pgflow, singularity, centralcloud, genesis).
# The build stage has the C toolchain (gcc) that the tree-sitter grammars need.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/pgflow target/release/singularity target/release/centralcloud target/release/genesis /out/

FROM debian:bookworm-slim
# curl serves the compose healthchecks (GET /readyz).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --user-group --uid 10001 --no-create-home pgflow \
 && mkdir -p /var/lib/singularity \
 && chown pgflow:pgflow /var/lib/singularity
COPY --from=build /out/ /usr/local/bin/
USER pgflow
# Singularity applies changes under its workspace (a named volume in docker-compose).
WORKDIR /var/lib/singularity
ENV RUST_LOG=info \
    SINGULARITY_WORKSPACE=/var/lib/singularity/workspace
