"""Drives the gateway with the official openai client and prints, as JSON, what the client saw:
the gateway's request id, the content, and when each content chunk arrived.

Usage: openai_client.py BASE_URL stream|plain|cancel|broken
"""

import json
import sys
import time

import openai

base_url, mode = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="not-checked", max_retries=0, timeout=30)
messages = [{"role": "user", "content": "Say hello"}]
started = time.monotonic()
out = {"mode": mode}

if mode == "plain":
    raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=messages)
    completion = raw.parse()
    out.update(request_id=raw.headers["x-request-id"], content=completion.choices[0].message.content,
               usage=completion.usage.model_dump())
else:
    model = {"stream": "fake-model", "cancel": "fake-slow", "broken": "fake-break"}[mode]
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True})
    out["request_id"] = raw.headers["x-request-id"]
    stream = raw.parse()
    content, arrivals, usage = "", [], None
    try:
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage.model_dump()
            for choice in chunk.choices:
                if choice.delta.content:
                    content += choice.delta.content
                    arrivals.append(time.monotonic() - started)
            if mode == "cancel" and len(arrivals) == 3:
                # The caller leaves mid-stream.
                stream.close()
                break
    except Exception as e:  # the upstream broke: the client sees the stream fail
        out["error"] = type(e).__name__
    out.update(content=content, arrivals=arrivals, usage=usage, total=time.monotonic() - started)

print(json.dumps(out))
