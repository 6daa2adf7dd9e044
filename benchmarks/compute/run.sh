#!/bin/sh
# The figures of "Choosing compute" in benchmarks/README.md, on the default model (vLLM, CPU).
# Run from the repository root: sh benchmarks/compute/run.sh
set -e
B=benchmarks/compute
# 1. fixed-N self-consistency (best_of_n's majority@N) and adaptive self-consistency
tts eval $B/self_consistency.tts --backend vllm --data $B/arithmetic20.jsonl --out $B/sc.jsonl \
    --budgets 1,2,4,8,16 --algorithm best_of_n --no-progress --no-plot
tts eval $B/self_consistency.tts --backend vllm --data $B/arithmetic20.jsonl --out $B/sc.jsonl \
    --budgets 8,16 --no-progress --plot $B/sc.png
# 2. a small search over the mixture-of-agents' architecture
tts search $B/mixture_search.tts --backend vllm --data $B/arithmetic10.jsonl --out $B/search.jsonl \
    --trials 8 --seed 0
# 3. the compute policy, fitted on the self-consistency results (in-sample: 20 tasks)
tts plan $B/sc.jsonl --out $B/policy.json --probe 2 --edges 1
tts eval $B/self_consistency.tts --backend vllm --data $B/arithmetic20.jsonl --out $B/policy_applied.jsonl \
    --policy $B/policy.json --no-progress
