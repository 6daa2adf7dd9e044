#!/bin/sh
# The figures of "Choosing compute" in benchmarks/README.md, on the default model (vLLM, CPU).
# Kept tiny (8 and 4 arithmetic tasks): measured on 2 CPU cores shared with other jobs, niced.
# Run from the repository root: sh benchmarks/compute/run.sh
set -e
B=benchmarks/compute
# a small engine: the machine is shared (vLLM on CPU otherwise reserves a quarter of the RAM)
E="--engine gpu_memory_utilization=0.1 --engine max_model_len=1024"
# 1. fixed-N self-consistency (best_of_n, read majority@N) and adaptive self-consistency
#    (the infer clause's adaptive(particles = N, wave = 2, threshold = 0.9)) at the same maxima
tts eval $B/self_consistency.tts --backend vllm $E --data $B/arithmetic8.jsonl --out $B/sc.jsonl \
    --budgets 1,2,4,8 --algorithm best_of_n --algorithm adaptive --no-progress --plot $B/sc.png
# 2. a small search over the mixture-of-agents' architecture
tts search $B/mixture_search.tts --backend vllm $E --data $B/arithmetic4.jsonl --out $B/search.jsonl \
    --trials 4 --startup 2 --seed 0
# 3. the compute policy, fitted on the self-consistency results (in-sample: the same 8 tasks)
tts plan $B/sc.jsonl --out $B/policy.json --probe 2 --edges 1
tts eval $B/self_consistency.tts --backend vllm $E --data $B/arithmetic8.jsonl --out $B/policy_applied.jsonl \
    --policy $B/policy.json --no-progress
