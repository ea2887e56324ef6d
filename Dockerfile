# Multi-stage build of the `aliexpress` binary: dependencies in a layer of their own, a
# stripped binary on a slim Debian runtime.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# libssl-dev and pkg-config: rdkafka's `ssl` feature links the system OpenSSL (SASL_SSL, SCRAM).
RUN apt-get update && apt-get install -y --no-install-recommends cmake perl libssl-dev pkg-config && rm -rf /var/lib/apt/lists/*
# The image's release build: no debug line tables and symbols stripped by Cargo (the
# repository's [profile.release] keeps line tables for the benchmarks' profiles). Set before
# both builds so that the dependency layer below matches the final build.
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=symbols
# Dependencies only, cached until Cargo.toml or Cargo.lock change: the manifest with empty
# stand-ins for every target it names (the library, the binary, the test and bench targets).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches tests/integration tests/chaos \
    && echo 'fn main() {}' >src/main.rs && : >src/lib.rs \
    && echo 'fn main() {}' >benches/platform.rs && echo 'fn main() {}' >tests/chaos/main.rs \
    && : >tests/integration/main.rs \
    && cargo build --release --locked --bin aliexpress \
    && rm -rf src benches tests target/release/aliexpress target/release/deps/aliexpress-* \
       target/release/deps/libaliexpress-* target/release/.fingerprint/aliexpress-*
# The sources: only the crate itself is compiled from here on.
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
COPY tests ./tests
# The commit, exported as aliexpress_build_info{git_sha} (empty when not given):
# docker build --build-arg ALIEXPRESS_GIT_SHA=$(git rev-parse --short HEAD) .
ARG ALIEXPRESS_GIT_SHA=
RUN ALIEXPRESS_GIT_SHA="$ALIEXPRESS_GIT_SHA" cargo build --release --locked --bin aliexpress

FROM debian:bookworm-slim
# libssl3: the system OpenSSL rdkafka links; ca-certificates: TLS to managed services; curl:
# the compose healthchecks.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libssl3 && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 aliexpress
COPY --from=build /src/target/release/aliexpress /usr/local/bin/aliexpress
USER aliexpress
EXPOSE 8000
ENTRYPOINT ["aliexpress"]
CMD ["serve"]
