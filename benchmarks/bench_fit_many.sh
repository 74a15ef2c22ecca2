#!/usr/bin/env bash
# Several people's fits across GPUs (`avatar_nb fit --identities`, one process per person): the same people fitted
# with 1 process at a time, then with N at once (one GPU each); people/minute of each and the ratio, from the
# fit_many.json files the runs write.
#
#   DATA=data/s512 IDS=0,1 N=2 FIT="--template data/anny_k4.npz steps=300 size=256 body=rigid" \
#       OUTD=out bash benchmarks/bench_fit_many.sh
#
# Env: DATA (dataset with several people in its train split), IDS (their identities, or all), N (processes at once
# in the second run, default: every GPU), FIT (further `avatar_nb fit` arguments), OUTD (output folder).
set -eu
OUTD=${OUTD:-bench_fit_many_out}; N=${N:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
mkdir -p "$OUTD"
# shellcheck disable=SC2086
python -m avatar_nb fit --data "$DATA" --out "$OUTD/one" --identities "${IDS:-all}" --devices 1 ${FIT:-}
# shellcheck disable=SC2086
python -m avatar_nb fit --data "$DATA" --out "$OUTD/many" --identities "${IDS:-all}" --devices "$N" ${FIT:-}
python - "$OUTD" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1]); r = {k: json.loads((d / k / "fit_many.json").read_text()) for k in ("one", "many")}
print("| processes at once | people | wall s | people/minute | per-person fit s (mean) |")
print("| ---: | ---: | ---: | ---: | ---: |")
for k in ("one", "many"):
    x = r[k]; s = [j["seconds"] for j in x["jobs"]]
    print(f"| {x['processes_at_once']} | {x['people']} | {x['wall_s']} | {x['people_per_minute']} | {sum(s) / len(s):.1f} |")
print(f"\nratio: {r['many']['people_per_minute'] / r['one']['people_per_minute']:.2f}x people/minute")
PY
