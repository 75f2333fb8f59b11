import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getTokenMetadata } from '@cashu/cashu-ts';
import { FakeUpstream } from './support/upstream.ts';
import { expectMoneyConserved, startGateway, type Gateway } from './support/gateway.ts';
import { mintToken, receive } from './support/cashu.ts';
import { startMint, type RunningMint } from './support/mint.ts';
import { sha256Hex } from '../src/cashu/credential.ts';

const upstream = new FakeUpstream();
let feeMint: RunningMint;
let gw: Gateway;

/** What the mint takes to redeem a token: 100 ppk per proof, rounded up. */
const redeemFee = (token: string) => Math.ceil(((getTokenMetadata(token).proofAmounts?.length ?? 0) * 100) / 1000);

async function chat(headers: Record<string, string>) {
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'fees' }], max_tokens: 2 }),
  });
  return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, any> };
}

beforeAll(async () => {
  await upstream.start();
  feeMint = await startMint({ inputFeePpk: 100 });
  gw = await startGateway(feeMint.url, upstream, { MODEL_PRICES: JSON.stringify({ 'gpt-test': { prompt: 200, completion: 900 } }) });
});
afterAll(async () => {
  await gw?.close();
  await upstream.stop();
  await feeMint?.stop();
});
afterEach(async () => {
  await expectMoneyConserved(gw);
});

describe('a mint that charges input fees (100 ppk)', () => {
  it('credits a token net of the swap fee, and books what the mint takes on refunds and change', async () => {
    const token = await mintToken(feeMint.url, 100);
    const proofs = getTokenMetadata(token).proofAmounts?.length ?? 3;
    const res = await chat({ authorization: `Bearer ${token}` });
    expect(res.status).toBe(200);
    const fee = Math.ceil((proofs * 100) / 1000);
    const key = (await gw.ledger.getKey(sha256Hex(token)))!;
    expect(key.balance).toBe((100 - fee) * 1000 - res.json.usage.cost.total_msats);

    const refund = await fetch(`${gw.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(refund.status).toBe(200);
    const body = (await refund.json()) as { token: string; sats: string };
    expect(Number(body.sats)).toBe(Math.floor(((100 - fee) * 1000 - res.json.usage.cost.total_msats) / 1000));
    // The token is worth what the refund says; its holder pays the mint's fee to redeem it.
    expect(getTokenMetadata(body.token).amount.toNumber()).toBe(Number(body.sats));
    expect(await receive(feeMint.url, body.token)).toBe(Number(body.sats) - redeemFee(body.token));

    const x = await mintToken(feeMint.url, 60);
    const xFee = Math.ceil(((getTokenMetadata(x).proofAmounts?.length ?? 0) * 100) / 1000);
    const paid = await chat({ 'x-cashu': x });
    expect(paid.status).toBe(200);
    const change = paid.headers.get('x-cashu')!;
    const changeSats = Math.floor(((60 - xFee) * 1000 - paid.json.usage.cost.total_msats) / 1000);
    expect(getTokenMetadata(change).amount.toNumber()).toBe(changeSats);
    expect(await receive(feeMint.url, change)).toBe(changeSats - redeemFee(change));
    // The fees the gateway's own swaps paid are on the books as the operator's cost.
    expect((await gw.ledger.totals()).fees).toBeGreaterThan(0);
  });
});
