import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';

const PYTHON = join(resolve(import.meta.dirname, '..', '..'), '.venv', 'bin', 'python');

// The bolt11 library nutshell itself uses; a fresh node key signs each invoice, so the mint sees
// an outside payee, and FakeWallet "pays" it (1 sat fee) as a real backend would route it. The
// feature bits every node sets (BOLT 11: var_onion_optin, payment_secret) are there because
// cdk-mintd's parser (rust-lightning) refuses an invoice without them.
const SCRIPT = `
import os, sys, time
from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags, encode
from bolt11.models.features import Feature, Features, FeatureState
tags = Tags()
tags.add(TagChar.payment_hash, os.urandom(32).hex())
tags.add(TagChar.payment_secret, os.urandom(32).hex())
tags.add(TagChar.description, "cashu-gateway test")
tags.add(TagChar.expire_time, 3600)
tags.add(TagChar.features, Features.from_feature_list({Feature.var_onion_optin: FeatureState.required, Feature.payment_secret: FeatureState.required}))
amount = int(sys.argv[1])
invoice = Bolt11(currency="bc", amount_msat=MilliSatoshi(amount) if amount else None, date=int(time.time()), tags=tags)
print(encode(invoice, os.urandom(32).hex()))
`;

/** A bolt11 invoice from a payee outside the mint, for `sats` (0: an invoice without an amount). */
export function externalInvoice(sats: number): string {
  const r = spawnSync(PYTHON, ['-c', SCRIPT, String(sats * 1000)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`could not make an invoice: ${r.stderr}`);
  return r.stdout.trim();
}
