#!/usr/bin/env bash
# The scheduler-overhead arms, alternating: 9ae03b6 (a worktree at /tmp/head) and this tree.
. /work/venv/bin/activate; cd /tmp
for config in 1024,8,8 16,8,64 16,8,200; do
  for arm in head:python main:python main:tts-replay main:tts; do
    if [ $config = 16,8,200 ] && [ $arm = main:python ]; then continue; fi
    tree=${arm%%:*}; form=${arm##*:}; root=/tmp/head; [ $tree = main ] && root=/work/main
    extra=""; [ $form != python ] && extra="--form $form"
    echo -n "$tree "; PYTHONPATH=$root python /work/main/benchmarks/scheduler_overhead.py --configs 16,8,8 $config $extra | tail -1
  done
done
