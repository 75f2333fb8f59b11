"""Pays the gateway with Cashu through the official `openai` Python package, as a user would.

Reads GATEWAY_URL, TOKEN (a Cashu token used as the API key) and X_TOKEN (a token for one
request, sent in the X-Cashu header), and prints one JSON object with what the client saw.
"""

import json
import os
import sys

from openai import OpenAI

base_url = os.environ["GATEWAY_URL"] + "/v1"
messages = [{"role": "user", "content": "What is six times seven?"}]
out = {"openai_version": __import__("openai").__version__}

# The token is the API key: redeemed on first use, then spent from.
client = OpenAI(base_url=base_url, api_key=os.environ["TOKEN"], max_retries=0)
res = client.chat.completions.create(model="gpt-test", messages=messages)
usage = res.usage.model_dump()
out["plain"] = {"content": res.choices[0].message.content, "usage": usage}

stream = client.chat.completions.create(model="gpt-test", messages=messages, stream=True, max_tokens=4)
text, final = "", None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage is not None:
        final = chunk.usage.model_dump()
out["stream"] = {"content": text, "usage": final}

# One request paid with X-Cashu; the change comes back in the x-cashu response header.
one_shot = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
raw = one_shot.chat.completions.with_raw_response.create(
    model="gpt-test", messages=messages, max_tokens=2, extra_headers={"X-Cashu": os.environ["X_TOKEN"]}
)
parsed = raw.parse()
out["x_cashu"] = {
    "content": parsed.choices[0].message.content,
    "usage": parsed.usage.model_dump(),
    "change": raw.headers.get("x-cashu"),
    "cost_header": raw.headers.get("x-cost-msats"),
}

# No payment at all: the SDK raises its own error type with the gateway's 402 body.
try:
    OpenAI(base_url=base_url, api_key="sk-" + "0" * 64, max_retries=0).chat.completions.create(
        model="gpt-test", messages=messages
    )
    out["unknown_key"] = None
except Exception as e:  # openai.AuthenticationError
    out["unknown_key"] = {"type": type(e).__name__, "status": getattr(e, "status_code", None), "body": getattr(e, "body", None)}

json.dump(out, sys.stdout)
