# kakuremichi control: the static binary of scripts/build-static on an empty base, as
# scripts/images makes it without a Docker build. From the repository root:
#   scripts/build-static && docker build -f docker/control.Dockerfile -t kakuremichi/control .
# (docker buildx build --platform linux/arm64 … for the aarch64 image.)
ARG TARGETARCH=amd64

# Directories the non-root user owns, so a fresh named volume takes that owner.
FROM scratch AS directories
WORKDIR /data
WORKDIR /join

FROM scratch AS amd64
COPY target/x86_64-unknown-linux-musl/release/kakuremichi-control /kakuremichi-control

FROM scratch AS arm64
COPY target/aarch64-unknown-linux-musl/release/kakuremichi-control /kakuremichi-control

FROM ${TARGETARCH}
COPY --from=directories --chown=65534:65534 /data /data
COPY --from=directories --chown=65534:65534 /join /join
# Both architectures' agents, which /install.sh serves for one-line installs.
COPY target/x86_64-unknown-linux-musl/release/kakuremichi-agent /releases/kakuremichi-agent-x86_64
COPY target/aarch64-unknown-linux-musl/release/kakuremichi-agent /releases/kakuremichi-agent-aarch64
ENV KAKUREMICHI_RELEASE_DIR=/releases
EXPOSE 7080/tcp
VOLUME ["/data", "/join"]
USER 65534:65534
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["/kakuremichi-control", "healthcheck"]
ENTRYPOINT ["/kakuremichi-control"]
CMD ["--listen", "0.0.0.0:7080", "--data-dir", "/data"]
