import type { TestProject } from 'vitest/node';
import { startMint, type RunningMint } from './mint.ts';

let mint: RunningMint | undefined;

export async function setup(project: TestProject): Promise<void> {
  mint = await startMint();
  project.provide('mintUrl', mint.url);
}

export async function teardown(): Promise<void> {
  await mint?.stop();
}

declare module 'vitest' {
  export interface ProvidedContext {
    mintUrl: string;
  }
}
