#!/usr/bin/env bash
# Regenerate the sample trace report docs/report-sample.html and its screenshot
# docs/report-sample.png (shown in the README).
#
#   bash scripts/report_sample.sh           # the README's main job: particle filtering on vLLM
#   bash scripts/report_sample.sh tabular   # offline: examples/reasoning.tts on the tabular LM
#
# The screenshot is taken in headless Chromium (tests/browser.py; installed by
# `bash scripts/install.sh cpu --test`), which also fails on any script error in the page.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-vllm}" in
  vllm)
    tts run examples/particle_filter.tts --backend vllm --input "What is 7 * 6?" \
      --out docs/report-sample.jsonl --trace --report docs/report-sample.html ;;
  tabular)
    tts run examples/reasoning.tts --input 5 --particles 16 --seed 0 \
      --out docs/report-sample.jsonl --trace --report docs/report-sample.html ;;
  *) echo "usage: bash scripts/report_sample.sh [vllm|tabular]" >&2; exit 2 ;;
esac
python tests/browser.py docs/report-sample.html docs/report-sample.png
