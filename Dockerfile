# Multi-stage build of the `aliexpress` binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# libssl-dev and pkg-config: rdkafka's `ssl` feature links the system OpenSSL (SASL_SSL, SCRAM).
RUN apt-get update && apt-get install -y --no-install-recommends cmake perl libssl-dev pkg-config && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin aliexpress

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libssl3 && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 aliexpress
COPY --from=build /src/target/release/aliexpress /usr/local/bin/aliexpress
USER aliexpress
EXPOSE 8000
ENTRYPOINT ["aliexpress"]
CMD ["serve"]
