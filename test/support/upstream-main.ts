// The upstream double in a process of its own, for tests that measure the gateway's event loop
// and must not count the double's work as the gateway's.
import { FakeUpstream } from './upstream.ts';

const upstream = new FakeUpstream();
console.log(await upstream.start());
process.on('SIGTERM', () => void upstream.stop().then(() => process.exit(0)));
