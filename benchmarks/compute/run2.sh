#!/bin/sh
# The larger runs of "Choosing compute" (benchmarks/README.md), after run.sh.
# Run from the repository root: sh benchmarks/compute/run2.sh
set -e
B=benchmarks/compute
E="--engine gpu_memory_utilization=0.1 --engine max_model_len=1024"
# fixed N against adaptive on 20 tasks (the policy's development set)
tts eval $B/self_consistency.tts --backend vllm $E --data $B/arithmetic20.jsonl --out $B/sc20.jsonl \
    --budgets 1,2,4,8,16 --algorithm best_of_n --algorithm adaptive --no-progress --plot $B/sc20.png
# the search of run.sh, resumed from 4 to 10 trials (the same trials a 10-trial search gives)
tts search $B/mixture_search.tts --backend vllm $E --data $B/arithmetic4.jsonl --out $B/search.jsonl \
    --trials 10 --startup 2 --seed 0
# the policy: fitted on tasks 0-19, applied to the held-out tasks 20-39, against fixed arms there
tts plan $B/sc20.jsonl --out $B/policy20.json --probe 4 --edges 0.75,1
tts eval $B/self_consistency.tts --backend vllm $E --data $B/arithmetic_heldout20.jsonl \
    --out $B/heldout.jsonl --policy $B/policy20.json --no-progress
tts eval $B/self_consistency.tts --backend vllm $E --data $B/arithmetic_heldout20.jsonl \
    --out $B/heldout.jsonl --budgets 1,4,16 --algorithm best_of_n --algorithm adaptive --no-progress --plot $B/heldout.png
# pruning with restarts on the model's self-evaluation against best-of-N, the same program
# (0.2: on the 2026-12-02 machine 0.1 left no room for the KV cache after the model)
tts eval examples/self_eval_restarts.tts --backend vllm --engine gpu_memory_utilization=0.2 --engine max_model_len=1024 \
    --data $B/arithmetic20.jsonl --out $B/restarts20.jsonl --budgets 1,2,4,8 \
    --algorithm best_of_n --algorithm restarts --no-progress --plot $B/restarts20.png
python $B/compare.py $B/restarts20.jsonl $B/restarts20_weighted.png --arm restarts --metric weighted_vote --auc
