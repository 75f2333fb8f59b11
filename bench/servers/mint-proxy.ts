/**
 * CountingProxy (test/support/counting-proxy.ts) in front of nutshell, in a process of its own:
 * every HTTP call the gateway makes to its mint passes here and is counted, by method and path.
 */
import { CountingProxy } from '../../test/support/counting-proxy.ts';

const proxy = new CountingProxy(process.env.MINT_URL!);
await proxy.start();
process.on('message', (m: { cmd: string }) => {
  if (m.cmd === 'reset') {
    proxy.reset();
    process.send!({ ok: true });
  } else if (m.cmd === 'delay') {
    proxy.delayMs = (m as { cmd: string; delayMs: number }).delayMs;
    process.send!({ ok: true });
  } else if (m.cmd === 'calls') {
    const byPath: Record<string, number> = {};
    for (const c of proxy.calls) byPath[c.replace(/\/[0-9a-f-]{20,}$/i, '/:id')] = (byPath[c.replace(/\/[0-9a-f-]{20,}$/i, '/:id')] ?? 0) + 1;
    process.send!({ total: proxy.calls.length, byPath });
  }
});
process.on('disconnect', () => void proxy.stop().then(() => process.exit(0)));
process.send!({ ready: true, url: proxy.url });
