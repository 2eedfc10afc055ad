"""The embedded engine behind the gateway: real SmolLM2 answers through the openai SDK."""

from pathlib import Path

import openai

from harness import KEY

MODEL = Path(__file__).resolve().parents[2] / "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def test_embedded_smollm2_answers_through_the_sdk(start):
    assert MODEL.exists(), "run scripts/fetch-model"
    gw = start.gateway(
        {
            "accounts": [{"id": "acme"}],
            "nodes": [
                {
                    "id": "local",
                    "kind": "embedded",
                    "model_path": str(MODEL),
                    "models": ["smollm2-135m-instruct"],
                    "prices": {"input_per_1m": "0.10", "output_per_1m": "0.20"},
                }
            ],
        }
    )
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["smollm2-135m-instruct"]

    raw = client.chat.completions.with_raw_response.create(
        model="smollm2-135m-instruct", messages=QUESTION, temperature=0, max_tokens=24
    )
    reply = raw.parse()
    assert "Paris" in reply.choices[0].message.content
    assert raw.headers["x-tollgate-node"] == "local"
    assert reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 24

    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=QUESTION,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content, "greedy stream equals the greedy answer"
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens

    receipts = gw.receipts()
    assert [r["node"] for r in receipts] == ["local", "local"]
    assert all(r["usage_source"] == "upstream" for r in receipts)
