#!/usr/bin/env bash
# The CIFAR-10 (JPEG q75) campaign on a CPU: the k=5 ablation (Student, KD, IG, KD_IG, KD_IG with shuffled maps)
# and the width=0.5 students (Student, KD_IG), 3 seeds each, seed 0 of every arm first. Within a seed the arms that
# need no IG maps come first: the maps (50,000 images) take over an hour on a 2-core CPU and live in the run folder's
# cache, so a session that may end before an IG arm finishes spends its time on arms it can land instead.
# Then, as the budget allows, the extra arms, seed by seed: KD_IG on uniform noise maps (does the overlay help as a plain
# augmentation? it needs no IG maps), the paper's attention arms (AT, KD_AT, KD_IG_AT) and e²KD's explanation matching
# (KD_EXPL); last, the compression sweep (k = 3..17, one seed). The config evaluates the teacher (first) and every
# student after it trains under the 9 corruptions x 5 severities (robustness.enabled). Every call resumes: finished
# runs are reused by identity, a run finished without its corruption record gets one, and an interrupted run goes on
# from its last finished epoch, so re-run it to continue.
#
#   IGKD_DATA_DIR=DIR IGKD_TEACHER=teacher.pt [IGKD_CAMPAIGN_DIR=$HOME/igkd-campaign] bash campaign.sh [EXPERIMENT OPTIONS]
#
# It first plans every call (--plan-only, seconds each), so that the report's status line lists every run still to come.
# On a new machine, run `bash land.sh restore` first: the runs that have landed come back instead of training again.
# EXPERIMENT OPTIONS go to every `igkd experiment` call: --stop-at HH:MM (one deadline for all calls; --budget would
# restart with each call), or --set device=cuda --jobs 4 on a GPU. --no-maps (this script's own option) runs only the
# arms that need no IG maps (Student, KD, and the extra noise control, AT, KD_AT, KD_EXPL; the sweep's Student and KD),
# for a session on a new machine too short to rebuild the maps and train on them (the rebuild took 58 min on an Intel
# Xeon with AMX, 1.6 h on an AMD EPYC); the plan still names every run.
set -euo pipefail
: "${IGKD_DATA_DIR:?set IGKD_DATA_DIR to the folder holding cifar10-jpeg-{train,test}.tar.gz}"
teacher=${IGKD_TEACHER:?set IGKD_TEACHER to the teacher checkpoint (e.g. shared/models/cifar10-jpeg-teacher-e25.pt)}
out=${IGKD_CAMPAIGN_DIR:-$HOME/igkd-campaign}
k5=(-c cifar10_jpeg_cpu --set "teacher.checkpoint=$teacher" --set "out_dir=$out")
width=("${k5[@]}" --set student.arch=mobilenetv2_cifar:width=0.5)
# --stop-at HH:MM means the next such time to each call, so a call started after it would run until the same time
# tomorrow: resolve it once, here, to an absolute time that every call shares.
args=()
no_maps=0
while (($#)); do
  case $1 in
    --no-maps) no_maps=1; shift ;;
    --stop-at) args+=(--stop-at "$(python3 -c 'import sys, datetime; from igkd.runtime.budget import parse_stop_at; print(datetime.datetime.fromtimestamp(parse_stop_at(sys.argv[1])).isoformat(timespec="seconds"))' "$2")"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- "${args[@]}"
igkd() {  # each call stamped in the log, the ledger of the campaign's wall time
  echo "=== $(date -u +%FT%TZ) igkd $*"
  python3 -m igkd "$@"
}
calls() {  # every call of the campaign, in its order, each with the options "$@"; with skip=1 none that needs IG maps
  local extra=AT,KD_AT,KD_IG_AT,KD_EXPL sweep=Student,KD,IG,KD_IG
  ((skip)) && extra=AT,KD_AT,KD_EXPL sweep=Student,KD
  for seed in 0 1 2; do
    local one=(--first-seed "$seed" --seeds 1)
    igkd experiment ablation "${k5[@]}" "${one[@]}" --methods Student,KD "$@"
    igkd experiment ablation "${width[@]}" "${one[@]}" --methods Student "$@"
    ((skip)) || igkd experiment ablation "${k5[@]}" "${one[@]}" --methods IG,KD_IG --controls shuffled "$@"
    ((skip)) || igkd experiment ablation "${width[@]}" "${one[@]}" --methods KD_IG --controls none "$@"
  done
  for seed in 0 1 2; do
    igkd experiment ablation "${k5[@]}" --first-seed "$seed" --seeds 1 --methods KD_IG-noise "$@"
    igkd experiment ablation "${k5[@]}" --first-seed "$seed" --seeds 1 --methods "$extra" --controls none "$@"
  done
  # last, the compression sweep: the last k blocks removed, k = 3..17 (2.2x-1122x fewer parameters), one seed; its k=5
  # runs are the ablation's seed 0, reused by identity
  igkd experiment sweep "${k5[@]}" --first-seed 0 --seeds 1 --blocks 3,5,7,9,11,13,15,17 --widths none --methods "$sweep" "$@"
}
skip=0 calls --plan-only "$@"  # the whole campaign in the plan first, so the report's status names every run still to come
skip=$no_maps calls "$@"
echo "=== $(date -u +%FT%TZ) campaign.sh: every call returned; run it again to go on with what a deadline stopped (the report's status names it)"
