FROM node:24-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY src ./src
ENV HOST=0.0.0.0 PORT=8000 DATABASE_URL=sqlite:/data/gateway.db
VOLUME /data
EXPOSE 8000
USER node
CMD ["node", "--disable-warning=ExperimentalWarning", "src/main.ts"]
