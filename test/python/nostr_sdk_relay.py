"""rust-nostr's relay (PyPI nostr-sdk) on loopback, as the tests want it: optionally demanding
NIP-42 AUTH (for reading, writing or both) and a NIP-13 proof-of-work minimum.

Prints `ready ws://…` once it listens, then serves until it is sent SIGTERM.
"""
import argparse
import asyncio
import signal

from nostr_sdk import LocalRelayBuilder, LocalRelayBuilderNip42, LocalRelayBuilderNip42Mode

MODES = {"read": LocalRelayBuilderNip42Mode.READ, "write": LocalRelayBuilderNip42Mode.WRITE, "both": LocalRelayBuilderNip42Mode.BOTH}


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--auth", choices=sorted(MODES))
    p.add_argument("--pow", type=int, default=0)
    a = p.parse_args()
    builder = LocalRelayBuilder().addr("127.0.0.1").port(a.port)
    if a.auth:
        builder = builder.nip42(LocalRelayBuilderNip42(mode=MODES[a.auth]))
    if a.pow > 0:
        builder = builder.min_pow(a.pow)
    relay = builder.build()
    await relay.run()
    print("ready", str(await relay.url()), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    relay.shutdown()


asyncio.run(main())
