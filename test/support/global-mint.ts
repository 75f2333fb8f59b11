import type { TestProject } from 'vitest/node';
import { startMint, type RunningMint } from './mint.ts';
import { startPostgres, type RunningPostgres } from './postgres.ts';

let mint: RunningMint | undefined;
let postgres: RunningPostgres | undefined;

/** The real parts every test file shares: a nutshell mint, and PostgreSQL for that project. */
export async function setup(project: TestProject): Promise<void> {
  mint = await startMint();
  project.provide('mintUrl', mint.url);
  if (project.vitest.projects.some((p) => p.name === 'postgres')) {
    postgres = await startPostgres();
    project.provide('postgresUrl', postgres.url);
  } else {
    project.provide('postgresUrl', '');
  }
}

export async function teardown(): Promise<void> {
  await mint?.stop();
  await postgres?.stop();
}

declare module 'vitest' {
  export interface ProvidedContext {
    mintUrl: string;
    postgresUrl: string;
  }
}
