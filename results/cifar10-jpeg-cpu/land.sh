#!/usr/bin/env bash
# Land the campaign's progress in this folder: Tiny ImageNet transfer of the teacher and every finished student, the
# report of every finished run, the models (teacher, and the best-on-validation student of each ablation arm) with their
# SHA-256; then, once those are committed, their params, MACs and CPU latency side by side (latency.json: truncation
# against width at similar size), so that its provenance names a clean commit, and the report again with that table.
# When a landing leaves the models as they were, latency.json still times them and the report keeps its table.
# Run it with the campaign stopped or paused (the latency needs the CPU to itself); it reads the campaign's run folder
# and writes only here.
#
#   IGKD_DATA_DIR=DIR IGKD_TEACHER=teacher.pt [IGKD_CAMPAIGN_DIR=$HOME/igkd-campaign] bash land.sh         # then commit
#   IGKD_DATA_DIR=DIR IGKD_TEACHER=teacher.pt [IGKD_CAMPAIGN_DIR=$HOME/igkd-campaign] bash land.sh bench   # then commit
#
# On a new machine, before campaign.sh: put what has landed back into the run folder (igkd restore), so that the campaign
# goes on from there instead of training those runs again (the runs whose models are not here keep their records):
#
#   IGKD_DATA_DIR=DIR IGKD_TEACHER=teacher.pt [IGKD_CAMPAIGN_DIR=$HOME/igkd-campaign] bash land.sh restore
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${IGKD_DATA_DIR:?set IGKD_DATA_DIR to the folder holding the shared data}"
teacher=${IGKD_TEACHER:?set IGKD_TEACHER to the teacher checkpoint the campaign uses}
out=${IGKD_CAMPAIGN_DIR:-$HOME/igkd-campaign}
run_dir="$out/cifar10-jpeg-cpu"
config=(-c cifar10_jpeg_cpu --set "teacher.checkpoint=$teacher" --set "out_dir=$out")
report() {  # the report of every finished run (and any options, e.g. --latency), copied here
  python3 -m igkd report "${config[@]}" "$@"
  rm -rf "$here/report" && cp -r "$run_dir/report" "$here/report"
}
if [[ ${1:-} == restore ]]; then
  python3 -m igkd restore "$here/report" --models "$here/models" "${config[@]}"
  exit 0
fi
if [[ ${1:-} == bench ]]; then
  cd "$here"  # paths in latency.json relative to this folder
  mapfile -t students < <(python3 -c 'import json,sys; print("\n".join("models/" + m["file"] for m in json.load(open(sys.argv[1])) if m["file"] != "teacher.pt"))' models/manifest.json)
  python3 -m igkd bench models/teacher.pt "${students[@]}" --backend torch-cpu --backend onnxruntime-cpu --repeats 50 -o latency.json
  report --latency latency.json
  exit 0
fi
models_sha256() { (cd "$here" && sha256sum models/*.pt 2>/dev/null) || true; }  # nothing before the first landing
python3 -m igkd transfer "${config[@]}"
before=$(models_sha256)
python3 - "$run_dir" "$here" <<'PY'
"""Copy the teacher and, per arm of the ablation, the student with the best validation accuracy into models/, with a
manifest. The compression sweep's students stay in the run folder: their records land in the report."""
import hashlib, json, shutil, sys
from pathlib import Path

from igkd.artifacts.layout import SUMMARY, published_model

run_dir, here = Path(sys.argv[1]), Path(sys.argv[2])
ablation = run_dir / "experiments" / "ablation.json"
plan = json.loads(ablation.read_text()) if ablation.is_file() else {"jobs": []}  # none before the ablation's first call
arms = {}
for job in plan["jobs"]:
    final = run_dir / "students" / job["run_id"] / SUMMARY
    if final.is_file():
        record = json.loads(final.read_text())
        key = (job["group"], job["arch"])
        if key not in arms or record["best_val_accuracy"] > arms[key][1]["best_val_accuracy"]:
            arms[key] = (job["run_id"], record)
models = here / "models"
shutil.rmtree(models, ignore_errors=True)
models.mkdir()
chosen = {"teacher.pt": (published_model(run_dir / "teacher"), json.loads((run_dir / "teacher" / SUMMARY).read_text()))}
for (group, arch), (run_id, record) in sorted(arms.items()):
    chosen[f"{group}-{arch.replace(':', '_').replace('=', '')}.pt"] = (published_model(run_dir / "students" / run_id), record)
manifest = []
for name, (source, record) in chosen.items():
    shutil.copy2(source, models / name)
    manifest.append({"file": name, "sha256": hashlib.sha256((models / name).read_bytes()).hexdigest(), "arch": record["arch"],
                     "test_accuracy": record["test"]["accuracy"], "best_val_accuracy": record.get("best_val_accuracy"),
                     "seed": record.get("seed"), "command": record["command"], "git_commit": record["git_commit"],
                     "run": source.parent.name})
(models / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
print(f"land: {len(manifest)} models in {models}")
PY
cd "$here"  # paths in latency.json relative to this folder
if [[ -f latency.json && $(models_sha256) == "$before" ]]; then
  report --latency latency.json  # the same models as latency.json timed
  echo "land: the models are those latency.json times; commit"
else
  report
  echo "land: new models; commit them, then run 'bash land.sh bench' for their latency (latency.json)"
fi
