# kakuremichi agent: the static binary of scripts/build-static on an empty base, as
# scripts/images makes it without a Docker build. From the repository root:
#   scripts/build-static && docker build -f docker/agent.Dockerfile -t kakuremichi/agent .
# (docker buildx build --platform linux/arm64 … for the aarch64 image.)
ARG TARGETARCH=amd64

# Directories the non-root user owns, so a fresh named volume takes that owner.
FROM scratch AS directories
WORKDIR /state

FROM scratch AS amd64
COPY target/x86_64-unknown-linux-musl/release/kakuremichi-agent /kakuremichi-agent

FROM scratch AS arm64
COPY target/aarch64-unknown-linux-musl/release/kakuremichi-agent /kakuremichi-agent

FROM ${TARGETARCH}
COPY --from=directories --chown=65534:65534 /state /state
ENV STATE_DIR=/state
VOLUME ["/state"]
USER 65534:65534
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["/kakuremichi-agent", "healthcheck"]
ENTRYPOINT ["/kakuremichi-agent"]
