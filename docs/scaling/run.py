"""The scaling demo's run: ``tts eval`` with the same arguments, plus each result line's
resampling record (the ESS before each resampling decision and whether it resampled), which
``tts eval`` does not store. Everything else (seeds, samples, metrics) is ``tts eval``'s own.

    python docs/scaling/run.py examples/scaling_demo.tts --backend vllm --data docs/scaling/tasks.jsonl \\
        --out docs/scaling/results.jsonl --budgets 1,2,4,8,16 \\
        --algorithm best_of_n --algorithm smc --algorithm beam
"""

from __future__ import annotations

import sys

from ppl import cli
from ppl import evaluate as ev

_task_record = ev.task_record


def task_record(task, method, budget, posterior, **options) -> dict:
    record = _task_record(task, method, budget, posterior, **options)
    d = posterior.diagnostics
    record["ess"] = [round(x, 3) for x in d.ess]
    record["resampled"] = list(d.resampled)
    return record


ev.task_record = task_record

if __name__ == "__main__":
    sys.exit(cli.main(["eval", *sys.argv[1:]]))
