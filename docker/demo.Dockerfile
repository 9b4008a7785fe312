# kakuremichi demo: the static binary of scripts/build-static on an empty base, as
# scripts/images makes it without a Docker build. From the repository root:
#   scripts/build-static && docker build -f docker/demo.Dockerfile -t kakuremichi/demo .
# (docker buildx build --platform linux/arm64 … for the aarch64 image.)
ARG TARGETARCH=amd64

FROM scratch AS amd64
COPY target/x86_64-unknown-linux-musl/release/kakuremichi-demo /kakuremichi-demo

FROM scratch AS arm64
COPY target/aarch64-unknown-linux-musl/release/kakuremichi-demo /kakuremichi-demo

FROM ${TARGETARCH}
EXPOSE 8080/tcp
USER 65534:65534
ENTRYPOINT ["/kakuremichi-demo"]
CMD ["0.0.0.0:8080"]
