/**
 * The scripted OpenAI-compatible upstream double (test/support/upstream.ts) in a process of its
 * own, so the load generator does not share its event loop. Driven over the fork IPC channel.
 */
import { FakeUpstream } from '../../test/support/upstream.ts';

const upstream = new FakeUpstream();
await upstream.start();
// The double records every request for the tests; a benchmark sends millions, so forget them.
setInterval(() => {
  upstream.requests.length = 0;
}, 1000).unref();

process.on('message', (m: { cmd: string; chunkDelayMs?: number }) => {
  if (m.cmd === 'chunkDelay') upstream.chunkDelayMs = m.chunkDelayMs ?? 0;
  process.send!({ ok: true });
});
process.on('disconnect', () => void upstream.stop().then(() => process.exit(0)));
process.send!({ ready: true, url: upstream.url });
