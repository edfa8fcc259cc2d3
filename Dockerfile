# Build: the release binary, with the SQL migrations compiled in.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin widget-auth

# Run: a small image with only the binary.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/widget-auth /usr/local/bin/widget-auth
ENV WIDGET_AUTH_DATA_DIR=/data
VOLUME /data
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/widget-auth"]
CMD ["serve"]
