# ruawatch container image: `ruawatch run` as a fixed unprivileged user, the database in /data.
#
# No Docker engine runs in CI, so test/container.test.ts reads this file and lays the image out
# from it: the build stage's steps run on a copy of the build context (.dockerignore applied), and
# the run stage's COPY, ENV, WORKDIR, USER, ENTRYPOINT, CMD and HEALTHCHECK are reproduced in a
# mount and PID namespace, as that user, with the application read-only and only /data writable.
# Keep every step in a form that test reads: exec-form JSON for ENTRYPOINT, CMD and HEALTHCHECK,
# build-stage RUN steps relative to WORKDIR. .ci/run runs the suite on NODE_VERSION.
ARG NODE_VERSION=24.22.3

# --- build: dev dependencies and TypeScript, then production dependencies only ---
FROM node:${NODE_VERSION}-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# src/ only (tsconfig.build.json): no tests, benchmarks or their helpers in the image.
RUN npm run build:app
# Production dependencies only; then what better-sqlite3 ships for building from source (the
# SQLite sources, C++) and its binaries for other platforms: 25 MB the image never loads.
RUN npm prune --omit=dev --no-audit --no-fund \
 && cd node_modules/better-sqlite3 \
 && rm -rf deps src binding.gyp \
 && find prebuilds -type f ! -name "$(node -p 'process.platform + "-" + process.arch').node" -delete

# --- run ---
FROM node:${NODE_VERSION}-bookworm-slim
# tini as PID 1 passes SIGTERM and SIGINT on, so one-shot commands (ingest, report, ...) stop at
# once: the kernel drops any signal a PID 1 has no handler for. `ruawatch run` handles both itself.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
# A fixed UID and GID, 10001, so a bind-mounted /data and secret files can be owned by it
# (chown 10001:10001). A named volume takes /data's owner from the image.
RUN groupadd --gid 10001 ruawatch \
 && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin ruawatch \
 && mkdir -p /data /config \
 && chown 10001:10001 /data \
 && chmod 0750 /data
# Defaults, not overrides: RUAWATCH_DB and RUAWATCH_LISTEN apply only where the config file sets no
# [database] path or [web] listen (RUAWATCH_DATABASE_PATH and RUAWATCH_WEB_LISTEN would override it).
# NODE_OPTIONS: V8 grows its young generation to 128 MiB under an evaluation of thousands of domains
# (short-lived rows, not data kept); 16 MiB semi-spaces keep peak RSS 80 MiB lower at no measurable
# CPU cost (docs/performance.md, "10,000 domains").
# SQLITE_TMPDIR: where SQLite puts the temporary files of sorts that outgrow its memory (adding many
# reports to the rollups at once, grouping a large domain's sources); the root is read-only.
ENV NODE_ENV=production \
    NODE_OPTIONS=--max-semi-space-size=16 \
    SQLITE_TMPDIR=/data \
    RUAWATCH_CONFIG=/config/ruawatch.toml \
    RUAWATCH_DB=/data/ruawatch.sqlite \
    RUAWATCH_LISTEN=0.0.0.0:8080
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY package.json ./
COPY migrations ./migrations
# The example runs as it is (no mailbox yet): mount your own over it.
COPY config.example.toml /config/ruawatch.toml
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
# Asks /healthz where [web] listen and the environment put it; 503 while polls fail.
HEALTHCHECK --interval=60s --timeout=10s --start-period=30s --retries=3 CMD ["node", "/app/dist/src/cli/main.js", "healthcheck"]
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/src/cli/main.js"]
CMD ["run"]
