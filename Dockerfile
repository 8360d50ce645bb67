# Clawplane itself, for docker-compose.yml: the single-host production path with the docker sandbox
# driver (docs/adr/0010-sandbox-port.md). The control plane drives the host's Docker engine through its
# socket and runs as root (it writes each tenant's files as that tenant's uid, as on a host install).
FROM node:24-bookworm-slim
# tar/gzip pack and unpack tenant state as the tenant's uid (setpriv, util-linux); ldd and sh build the
# sandbox image (scripts/build-sandbox-image.ts) from this image's own Node.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tar gzip util-linux libc-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/clawplane
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY . .
RUN node scripts/build-web.ts
ENV CLAWPLANE_ENV=production \
    CLAWPLANE_HOST=0.0.0.0 \
    CLAWPLANE_DATA_DIR=/var/lib/clawplane \
    CLAWPLANE_SANDBOX_DRIVER=docker
EXPOSE 8787
ENTRYPOINT ["node", "src/cli/main.ts"]
CMD ["serve"]
