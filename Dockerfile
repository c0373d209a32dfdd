# Multi-stage build of the four binaries (pgflow, singularity, centralcloud, genesis).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/pgflow target/release/singularity target/release/centralcloud target/release/genesis /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 pgflow
COPY --from=build /out/ /usr/local/bin/
USER pgflow
ENV RUST_LOG=info
