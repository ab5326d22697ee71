# syntax=docker/dockerfile:1
# The load generator's image (hopscope-loadgen): the demo traffic of
# docker-compose.yml, or load against any OTLP receiver. Build from the
# repository root:
#   docker build -f deploy/loadgen.Dockerfile -t hopscope-loadgen .

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hopscope-loadgen --bin hopscope-loadgen \
    && cp target/release/hopscope-loadgen /usr/local/bin/hopscope-loadgen

# glibc and libgcc, nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/hopscope-loadgen /usr/local/bin/hopscope-loadgen
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/hopscope-loadgen"]
CMD ["--help"]
