# ruawatch container image. The steps are the ones CI runs on every change (npm ci, npm run
# build, and the tests start `ruawatch run` as a process); `docker build` itself is not run by CI.

# --- build: dev dependencies, TypeScript, the native SQLite addon ---
FROM node:20-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY test ./test
COPY bench ./bench
# devtools: imported by the tests and benchmarks, and enrich-data.ts compiles the bundled network data.
COPY devtools ./devtools
COPY migrations ./migrations
RUN npm run build && npm prune --omit=dev

# --- run: production dependencies only, as a non-root user ---
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    RUAWATCH_DB=/data/ruawatch.sqlite \
    RUAWATCH_CONFIG=/config/ruawatch.toml \
    RUAWATCH_WEB_LISTEN=0.0.0.0:8080
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY package.json config.example.toml ./
COPY migrations ./migrations
RUN groupadd --system ruawatch && useradd --system --gid ruawatch --home-dir /data ruawatch \
    && mkdir -p /data /reports /config && chown ruawatch:ruawatch /data \
    && touch /config/ruawatch.toml
USER ruawatch
VOLUME ["/data"]
EXPOSE 8080
# Configuration: mount a file over /config/ruawatch.toml (empty here: defaults), or set
# RUAWATCH_* variables; secrets as *_FILE pointing at mounted files.
# /healthz answers 503 while polls fail; node rather than curl, which the slim image lacks.
HEALTHCHECK --interval=60s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]
# ruawatch handles SIGTERM itself (docker stop): it finishes the message it is on and exits.
CMD ["run"]
