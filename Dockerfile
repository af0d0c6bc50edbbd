# ruawatch container image. The steps are the ones CI runs on every change (npm ci, npm run
# build); `docker build` itself is not run by CI.

# --- build: dev dependencies, TypeScript, the native SQLite addon ---
FROM node:20-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY test ./test
COPY bench ./bench
COPY migrations ./migrations
RUN npm run build && npm prune --omit=dev

# --- run: production dependencies only, as a non-root user ---
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    RUAWATCH_DB=/data/ruawatch.sqlite
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY package.json config.example.toml ./
COPY migrations ./migrations
RUN groupadd --system ruawatch && useradd --system --gid ruawatch --home-dir /data ruawatch \
    && mkdir -p /data /reports && chown ruawatch:ruawatch /data
USER ruawatch
VOLUME ["/data"]
ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]
# The long-running worker (`run`) is not built yet; until then the image fetches, ingests, reports:
#   docker run -v ruawatch-data:/data -v /etc/ruawatch:/config:ro ruawatch fetch --config /config/ruawatch.toml
CMD ["--help"]
