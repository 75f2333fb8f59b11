import { parentPort } from 'node:worker_threads';
import { blindAll, native, signAll, unblindAll, type Schnorr } from './curve.ts';

/**
 * The curve worker: blinds, checks and unblinds the outputs of the gateway's own swaps, and signs
 * their locked inputs, off the main thread. A refill of the change float makes hundreds of outputs;
 * on the event loop their curve work held every request up for tens to hundreds of milliseconds.
 */
const tiny = (await import('tiny-secp256k1').catch(() => undefined)) as Schnorr | undefined;

export type CurveJob =
  | { id: number; op: 'blind'; secrets: Uint8Array; rs: Uint8Array }
  | { id: number; op: 'unblind'; input: Uint8Array }
  | { id: number; op: 'sign'; priv: Uint8Array; digests: Uint8Array };

export type CurveAnswer = { id: number; out: Uint8Array } | { id: number; error: string };

function run(job: CurveJob): Uint8Array {
  if (job.op === 'sign') {
    if (!tiny) throw new Error('tiny-secp256k1 is not available');
    return signAll(tiny, job.priv, job.digests);
  }
  if (!native) throw new Error('libsecp256k1 is not available');
  return job.op === 'blind' ? blindAll(native, job.secrets, job.rs) : unblindAll(native, job.input);
}

parentPort?.on('message', (job: CurveJob) => {
  let answer: CurveAnswer;
  try {
    answer = { id: job.id, out: run(job) };
  } catch (e) {
    answer = { id: job.id, error: (e as Error).message };
  }
  parentPort!.postMessage(answer, 'out' in answer ? [answer.out.buffer as ArrayBuffer] : []);
});
