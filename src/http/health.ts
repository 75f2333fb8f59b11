import type { FastifyInstance } from 'fastify';
import type { Catalog } from '../engine/catalog.ts';
import type { Ledger } from '../ledger/ledger.ts';

/** A key hash no token can have: reading it is a cheap round trip to the ledger. */
const PROBE_KEY = '0'.repeat(64);
const LEDGER_PROBE_TIMEOUT_MS = 5000;

async function ledgerProblem(ledger: Ledger): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`the ledger did not answer within ${LEDGER_PROBE_TIMEOUT_MS} ms`), LEDGER_PROBE_TIMEOUT_MS);
  });
  try {
    return await Promise.race([ledger.getKey(PROBE_KEY).then(() => undefined), timeout]);
  } catch (e) {
    return `the ledger failed: ${(e as Error).message}`;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `/health`: the process is up and serving HTTP. `/ready`: it can take paid requests, that is the
 * ledger answers and there are models to sell; otherwise 503 with the reasons.
 */
export function healthRoutes(app: FastifyInstance, deps: { ledger: Ledger; catalog: Catalog }): void {
  app.get('/health', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    return { status: 'ok' };
  });
  app.get('/ready', async (_req, reply) => {
    const problems: string[] = [];
    const ledger = await ledgerProblem(deps.ledger);
    if (ledger) problems.push(ledger);
    const models = deps.catalog.list().length;
    const upstreams = deps.catalog.problems();
    problems.push(...upstreams);
    if (models === 0 && upstreams.length === 0) problems.push('no models: the upstream listed none and none are configured (MODELS, MODEL_PRICES)');
    reply.header('cache-control', 'no-store');
    if (problems.length) return reply.code(503).send({ status: 'unavailable', reasons: problems });
    return { status: 'ready', models };
  });
}
