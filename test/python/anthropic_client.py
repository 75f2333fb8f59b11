"""Pays the gateway with Cashu through the official `anthropic` Python package, as a user would.

Reads GATEWAY_URL, TOKEN (a Cashu token used as the API key) and X_TOKEN (a token for one
request, sent in the X-Cashu header), and prints one JSON object with what the client saw.
"""

import json
import os

import anthropic

base_url = os.environ["GATEWAY_URL"]
messages = [{"role": "user", "content": "What is six times seven?"}]
out = {"anthropic_version": anthropic.__version__}

client = anthropic.Anthropic(base_url=base_url, api_key=os.environ["TOKEN"], max_retries=0)
msg = client.messages.create(model="claude-test", max_tokens=64, messages=messages)
out["plain"] = {"text": msg.content[0].text, "usage": msg.usage.model_dump()}

with client.messages.stream(model="claude-test", max_tokens=64, messages=messages) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
out["stream"] = {"text": text, "output_tokens": final.usage.output_tokens}

# One request paid with X-Cashu; the change comes back in the X-Cashu response header.
raw = anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0).messages.with_raw_response.create(
    model="claude-test", max_tokens=64, messages=messages, extra_headers={"X-Cashu": os.environ["X_TOKEN"]}
)
out["x_cashu"] = {"text": raw.parse().content[0].text, "change": raw.headers.get("x-cashu")}

try:
    anthropic.Anthropic(base_url=base_url, api_key="sk-" + "0" * 64, max_retries=0).messages.create(
        model="claude-test", max_tokens=8, messages=messages
    )
except anthropic.AuthenticationError as e:
    out["unknown_key"] = {"status": e.status_code, "type": e.body["error"]["type"], "code": e.body["error"]["code"]}

print(json.dumps(out))
