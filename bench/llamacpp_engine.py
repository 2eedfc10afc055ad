"""The llama.cpp side of `make bench-engine`: llama-cpp-python (built from
source for this CPU) on the same GGUF file, measured exactly as the Tollgate
engine is measured by `tollgate-bench-engine`. Prints one JSON object."""

import argparse
import json
import resource
import sys
import threading
import time

from llama_cpp import Llama


def stream_once(llm, lock, messages, max_tokens, bias):
    """One streamed greedy completion: (ttft_s, total_s, completion_tokens)."""
    with lock:  # a Llama object serves one request at a time
        # Forget the previous prompt: llama-cpp-python would otherwise reuse
        # its KV cache for a shared prefix, which the engine does not.
        llm.reset()
        start = time.perf_counter()
        first = None
        tokens = 0
        for chunk in llm.create_chat_completion(
            messages=messages,
            max_tokens=max_tokens,
            temperature=0.0,
            logit_bias=bias,
            stream=True,
        ):
            choice = chunk["choices"][0]
            if choice["delta"].get("content"):
                tokens += 1
                if first is None:
                    first = time.perf_counter()
            if choice.get("finish_reason") == "length":
                tokens = max_tokens
        end = time.perf_counter()
    return first - start, end - start, tokens


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--spec", required=True, help="the workload, as JSON")
    args = p.parse_args()
    spec = json.loads(args.spec)
    llm = Llama(
        model_path=args.model,
        n_ctx=spec["context_len"],
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_batch=512,
        verbose=False,
    )
    lock = threading.Lock()
    bias = {int(k): v for k, v in spec["logit_bias"].items()}
    short = spec["short_messages"]
    long = spec["long_messages"]
    new = spec["new_tokens"]

    # Warm-up, then the single stream.
    stream_once(llm, lock, short, 8, bias)
    ttft, total, tokens = stream_once(llm, lock, short, new, bias)
    decode = (tokens - 1) / (total - ttft)
    # Prefill: time to the first token of a long prompt, one new token.
    long_prompt_tokens = llm.create_chat_completion(
        messages=long, max_tokens=1, temperature=0.0
    )["usage"]["prompt_tokens"]
    pre_ttft, _, _ = stream_once(llm, lock, long, 1, bias)
    prefill = long_prompt_tokens / pre_ttft

    # Eight streams arriving together. A Llama object serves one request at a
    # time, so they run one after another; they are run from this thread
    # because llama.cpp's OpenMP pool, entered from several threads, keeps
    # idle spinning teams that would slow it down unfairly. Each stream's
    # first-token time counts from the common arrival.
    start = time.perf_counter()
    results = []
    for _ in range(spec["streams"]):
        queued = time.perf_counter() - start
        ttft_i, _, tokens_i = stream_once(llm, lock, short, new, bias)
        results.append((queued + ttft_i, tokens_i))
    wall = time.perf_counter() - start
    agg = sum(r[1] for r in results) / wall
    ttft8 = sorted(r[0] for r in results)

    print(json.dumps({
        "engine": "llama.cpp (llama-cpp-python, GGML_NATIVE)",
        "ttft_ms": ttft * 1000,
        "decode_tok_s": decode,
        "prefill_tok_s": prefill,
        "agg8_tok_s": agg,
        "ttft8_p50_ms": ttft8[len(ttft8) // 2] * 1000,
        "completion_tokens": tokens,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    sys.exit(main())
