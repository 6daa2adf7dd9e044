"""``tts serve`` on vLLM: concurrent chat requests against the same requests one by one, and
against the per-particle HTTP pattern.

The shared workload's prompts (``../shared/bench/workload.json``), each a chat request for
particle filtering: SMC with 16 particles, up to 8 steps split at a blank line, ≤ 96 tokens a
step, temperature 0.8, multinomial resampling every step (the workload's hash reward has no
``.tts`` built-in, so the weights stay equal: resampling draws uniformly, and the engine
work is the workload's). Three systems, alternating, after a warm-up of each:

- **serve**: ``--requests`` chat requests sent at once to ``tts serve --backend vllm`` (one
  scheduler, every request's particles in the same engine batch);
- **sequential**: the same requests to the same server, one after another;
- **per-particle**: the same particle filters run by clients that send one HTTP completion
  request per particle per step to a ``vllm serve`` of the same model (how proxies that run
  a technique per request call their engine), all requests at once.

    python benchmarks/serve.py                                  # 32 requests × 16 particles
    nice -n 19 python benchmarks/serve.py --requests 4 --particles 4 --max-steps 2 --max-tokens 32

Prints one JSON summary (and writes --out): requests/s and generated tokens/s per system, and
the ratios serve / sequential and serve / per-particle.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = ROOT.parent / "shared" / "bench" / "workload.json"

PROGRAM = """version 0.1
use lm = model("smollm2-135m-instruct")

program solve(problem: text) -> text {{
  let prompt = lm.chat(user = problem)
  let steps: list[segment] = []
  step (max {max_steps}) {{
    s ~ lm.gen(prompt + steps, stop = ["\\n\\n"], max_tokens = {max_tokens}, temperature = {temperature})
    steps += [s]
    if s.eos or not contains(s, "\\n\\n") {{ finish }}
  }}
  return text(steps)
}}

infer solve with smc(particles = {particles}, ess = 1.0, resample = "multinomial")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


def start_vllm(model_dir: str, port: int, log, engine: dict) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
        "--host", "127.0.0.1", "--port", str(port), "--dtype", engine["dtype"],
        "--max-model-len", str(engine["max_model_len"]), "--enforce-eager",
        "--gpu-memory-utilization", str(engine["gpu_memory_utilization"]), "--enable-prefix-caching",
        "--max-num-seqs", str(engine["max_num_seqs"]), "--logprobs-mode", "processed_logprobs",
        "--no-enable-chunked-prefill", "--seed", "0", "--disable-log-stats", "--uvicorn-log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def chat(client, prompt: str, seed: int) -> int:
    reply = client.chat.completions.create(
        model="solve", messages=[{"role": "user", "content": prompt}], extra_body={"ppl": {"seed": seed}}
    )
    return reply.usage.completion_tokens


def per_particle(url: str, model: str, tokenizer, prompt: str, args, seed: int) -> int:
    """One request's particle filter with one HTTP completion request per particle per step."""
    import httpx

    rng = np.random.default_rng(seed)
    start = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    particles = [""] * args.particles
    done = [False] * args.particles
    tokens = 0
    with httpx.Client(timeout=600) as http, ThreadPoolExecutor(args.particles) as pool:
        for step in range(args.max_steps):
            live = [i for i in range(args.particles) if not done[i]]
            if not live:
                break

            def complete(i, step=step, texts=particles):
                body = {
                    "model": model, "prompt": start + texts[i], "max_tokens": args.max_tokens,
                    "temperature": args.temperature, "stop": ["\n\n"], "include_stop_str_in_output": True,
                    "seed": int(seed * 100003 + step * 1009 + i),
                }  # fmt: skip
                answer = http.post(url + "/v1/completions", json=body).json()
                return answer["choices"][0], answer["usage"]["completion_tokens"]

            for i, (choice, used) in zip(live, pool.map(complete, live)):
                particles[i] += choice["text"]
                tokens += used
                if choice["finish_reason"] != "stop" or not choice["text"].endswith("\n\n"):
                    done[i] = True
            ancestors = rng.integers(0, args.particles, size=args.particles)  # equal weights: uniform
            particles = [particles[a] for a in ancestors]
            done = [done[a] for a in ancestors]
    return tokens


def timed(fn) -> tuple[float, int]:
    started = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-per-particle", action="store_true", help="skip the per-particle HTTP system")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=None,
        help="each engine's KV-cache share of memory (default: the workload's; two engines run at once)",
    )  # fmt: skip
    args = parser.parse_args()
    work = json.loads(WORKLOAD.read_text())
    if args.gpu_memory_utilization is not None:
        work["engine"]["gpu_memory_utilization"] = args.gpu_memory_utilization
    args.max_steps = args.max_steps or work["max_steps"]
    args.max_tokens = args.max_tokens or work["max_tokens_per_step"]
    args.temperature = work["temperature"]
    prompts = [work["prompts"][i % len(work["prompts"])] for i in range(args.requests)]

    import openai

    from ppl.backends.embedded import prepare

    model_dir = str(prepare("smollm2-135m-instruct"))
    program = tempfile.NamedTemporaryFile("w", suffix=".tts", delete=False)  # noqa: SIM115
    program.write(PROGRAM.format(max_steps=args.max_steps, max_tokens=args.max_tokens,
                                 temperature=args.temperature, particles=args.particles))  # fmt: skip
    program.close()
    logs = tempfile.mkdtemp(prefix="bench-serve-")
    serve_port, vllm_port = free_port(), free_port()
    serve_url, vllm_url = f"http://127.0.0.1:{serve_port}", f"http://127.0.0.1:{vllm_port}"
    engine = work["engine"]
    serve_log = open(Path(logs) / "serve.log", "w")  # noqa: SIM115
    serve = subprocess.Popen(
        [sys.executable, "-m", "ppl.app.cli", "serve", program.name, "--backend", "vllm", "--port", str(serve_port),
         "--engine", f"max_model_len={engine['max_model_len']}", "--engine", f"max_num_seqs={engine['max_num_seqs']}",
         "--engine", f"gpu_memory_utilization={engine['gpu_memory_utilization']}",
         "--max-particles", str(args.particles), "--in-flight", str(args.particles * args.requests),
         "--queue", str(args.requests), "--timeout", "7200"],
        stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    processes = [serve]
    try:
        wait_healthy(serve_url, serve)
        client = openai.OpenAI(base_url=serve_url + "/v1", api_key="none", max_retries=0, timeout=7200)
        chat(client, prompts[0], 10**6)  # warm-up: the engine starts on the first request
        if not args.no_per_particle:
            from transformers import AutoTokenizer

            vllm = start_vllm(model_dir, vllm_port, open(Path(logs) / "vllm.log", "w"), engine)  # noqa: SIM115
            processes.append(vllm)
            wait_healthy(vllm_url, vllm)
            model = json.loads(urllib.request.urlopen(vllm_url + "/v1/models").read())["data"][0]["id"]
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            per_particle(vllm_url, model, tokenizer, prompts[0], args, 10**6)  # warm-up

        def concurrent():
            with ThreadPoolExecutor(args.requests) as pool:
                return sum(pool.map(lambda i: chat(client, prompts[i], i), range(args.requests)))

        def sequential():
            return sum(chat(client, prompts[i], i) for i in range(args.requests))

        def particles_over_http():
            with ThreadPoolExecutor(args.requests) as pool:
                jobs = [
                    pool.submit(per_particle, vllm_url, model, tokenizer, prompts[i], args, i)
                    for i in range(args.requests)
                ]
                return sum(job.result() for job in jobs)

        systems = {"serve": concurrent, "sequential": sequential}
        if not args.no_per_particle:
            systems["per_particle"] = particles_over_http
        runs = []
        for repeat in range(args.repeats):
            for name, fn in systems.items():
                seconds, tokens = timed(fn)
                runs.append({"repeat": repeat, "system": name, "seconds": round(seconds, 2), "tokens": tokens,
                             "requests_per_s": round(args.requests / seconds, 4), "tokens_per_s": round(tokens / seconds, 2)})  # fmt: skip
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
        metrics = urllib.request.urlopen(serve_url + "/metrics").read().decode()
        calls = sum(
            float(line.rpartition(" ")[2])
            for line in metrics.splitlines()
            if line.startswith("ppl:engine_calls_total")
        )
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        os.unlink(program.name)

    def mean(name, field):
        values = [r[field] for r in runs if r["system"] == name]
        return sum(values) / len(values)

    summary = {
        "requests": args.requests, "particles": args.particles, "max_steps": args.max_steps,
        "max_tokens": args.max_tokens, "runs": runs, "serve_engine_calls_total": calls,
        "ratios": {
            f"serve/{other}": {
                "requests_per_s": round(mean("serve", "requests_per_s") / mean(other, "requests_per_s"), 3),
                "tokens_per_s": round(mean("serve", "tokens_per_s") / mean(other, "tokens_per_s"), 3),
            }
            for other in systems if other != "serve"
        },
    }  # fmt: skip
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    threading.excepthook = lambda hook: print(f"thread failed: {hook.exc_value}", file=sys.stderr)
    main()
