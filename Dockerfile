FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY src ./src
RUN npx tsc -p tsconfig.json && npm prune --omit=dev

FROM node:24-slim
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
ENV HOST=0.0.0.0 PORT=8000 DATABASE_URL=sqlite:/data/gateway.db DATA_DIR=/data
VOLUME /data
EXPOSE 8000
USER node
CMD ["node", "--disable-warning=ExperimentalWarning", "dist/main.js"]
