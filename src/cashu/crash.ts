/**
 * Fault injection for the crash-safety tests: with GATEWAY_CRASH_AT=<step>, the process kills
 * itself (SIGKILL, no cleanup) when it reaches that step of a redemption, paid quote, refund, melt
 * or Nostr job.
 */
export type CrashStep =
  | 'redeem:before-swap'
  | 'redeem:after-swap'
  | 'redeem:after-commit'
  | 'quote:after-commit'
  | 'refund:after-debit'
  | 'refund:before-swap'
  | 'refund:after-swap'
  | 'refund:after-commit'
  | 'melt:before-melt'
  | 'melt:after-melt'
  | 'foreign:before-melt'
  | 'foreign:after-melt'
  | 'dvm:before-deliver';

const CRASH_AT = process.env.GATEWAY_CRASH_AT;

export function crashPoint(step: CrashStep): void {
  if (CRASH_AT === step) process.kill(process.pid, 'SIGKILL');
}
