#!/usr/bin/env bash
# One GPU session as one command, from the repository root, finished within GPU_SESSION_SECONDS (default 540 s).
# Every stage runs under its own timeout, capped by the time left; a stage that fails does not stop the rest.
#
#     bash benchmarks/gpu_session.sh                                      # on the GPU machine (see benchmarks/README.md)
#     GPU_SESSION_TINY=1 OUT=/tmp/session bash benchmarks/gpu_session.sh  # the same at tiny scale on the CPU
#
#   wheels      .whl/ (benchmarks/prepare_gpu_session.sh) installed into /tmp/site, unless pydantic and captum import
#   smoke       benchmarks/gpu_smoke.py: every CUDA branch of igkd, one OK/FAIL/SKIP line each
#   throughput  benchmarks/throughput.py: student training vs the paper-style loop, IG maps/s vs Captum (the paper's
#               call and its fastest setting) on a subset of the training pool
#   latency     benchmarks/latency.py: teacher vs student, PyTorch (CUDA events) and onnxruntime
#   teacher     with the time left (at least 90 s): the next epochs of `igkd teacher -c cifar10_jpeg` in gpu-runs/;
#               stopped at its limit, it resumes from the last finished epoch (state.pt) in the next session
#
# Everything goes to $OUT/gpu-session/ (log.txt, stages.tsv, results/, summary.md), packed with the run folder
# (without its decoded-data cache) into $OUT/gpu-session.tar.gz, or parts .part0, .part1, ... of at most 15 MiB.
# Exit code 1 when a stage failed, 2 when nothing could be packed.
#
# Environment: OUT (default: a new temporary folder), GPU_SESSION_TINY=1 (CPU, digits, tiny models), GPU_SESSION_STAGES
# (default "smoke throughput latency teacher"), GPU_SESSION_SECONDS, GPU_SESSION_TIMEOUT_<STAGE> (seconds, e.g.
# GPU_SESSION_TIMEOUT_LATENCY=200), GPU_SESSION_TEACHER (a trained teacher checkpoint for the speed figures; default
# untrained: speed does not depend on the weights), GPU_SESSION_RUNS (the run folder, default gpu-runs).
set -u
cd "$(dirname "$0")/.." || exit 2

START=$(date +%s)
DEADLINE=$((START + ${GPU_SESSION_SECONDS:-540}))
PACK_RESERVE_S=30  # kept back for the summary and the archive
MIN_STAGE_S=20
MIN_TEACHER_S=90
PART_BYTES=$((15 * 1024 * 1024))
OUT=${OUT:-$(mktemp -d)}
SESSION=$OUT/gpu-session
RESULTS=$SESSION/results
LOG=$SESSION/log.txt
RUNS=${GPU_SESSION_RUNS:-gpu-runs}
TEACHER=${GPU_SESSION_TEACHER:-}
STAGES=${GPU_SESSION_STAGES:-smoke throughput latency teacher}
rm -rf "$SESSION" "$OUT"/gpu-session.tar.gz*  # a folder used before starts empty
mkdir -p "$RESULTS" "$RUNS" || { echo "error: cannot create $RESULTS and $RUNS" >&2; exit 2; }
RUNS=$(cd "$RUNS" && pwd)
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
[ -d .gpu-data ] && export IGKD_DATA_DIR=$PWD/.gpu-data

if [ "${GPU_SESSION_TINY:-0}" = 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny tensors gain nothing from threads
    TINY_TEACHER=mobilenetv2_cifar:width=0.25:k=10 TINY_STUDENT=mobilenetv2_cifar:width=0.25:k=14
    SMOKE=(--device cpu --skip compile)
    THROUGHPUT=(--tiny --steps 3 --repeats 2 --ig-images 64 --captum-images 16 --captum-grid 8:none,16:64 --captum-sweep-images 16
                --set attribution.steps=8 --parallel 1)
    LATENCY=(--arch "$TINY_TEACHER" --arch "$TINY_STUDENT" --image-size 8 --batch 1 --batch 8 --warmup 1 --repeats 3)
    TEACHER_RUN=(-c digits --set name=tiny --set device=cpu --set data.image_size=8 --set data.crop_padding=1
                 --set "teacher.arch=$TINY_TEACHER" --set teacher.train.epochs=2)
else
    SMOKE=()
    THROUGHPUT=(-c cifar10_jpeg --set "out_dir=$RUNS" --set student.train.batch_size=512 --steps 50 --repeats 3 --ig-images 5000
                --captum-images 512 --parallel 1,4)
    LATENCY=(--arch mobilenetv2_cifar:k=5 --cold)  # the cifar10_jpeg student; the teacher comes first (below)
    TEACHER_RUN=(-c cifar10_jpeg)
    if [ -n "$TEACHER" ]; then THROUGHPUT+=(--teacher "$TEACHER"); LATENCY=("$TEACHER" "${LATENCY[@]}")
    else LATENCY=(--arch mobilenetv2_cifar "${LATENCY[@]}"); fi
fi

say() { echo "$*" | tee -a "$LOG"; }

record() {  # NAME STATUS SECONDS DETAIL: one line of stages.tsv and of the log
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$SESSION/stages.tsv"
    say "$2 $1: $4 ($3 s)"
}

left() { echo $((DEADLINE - $(date +%s) - PACK_RESERVE_S)); }

stage() {  # NAME TIMEOUT COMMAND...: run it under min(TIMEOUT, time left); sets LIMIT, RC (124: stopped at LIMIT), ELAPSED
    local name=$1 started
    LIMIT=$(( $2 < $(left) ? $2 : $(left) ))
    shift 2
    say "== $name: timeout ${LIMIT} s: $*"
    started=$(date +%s)
    timeout -s INT -k 15 "$LIMIT" "$@" 2>&1 | tee -a "$LOG"
    RC=${PIPESTATUS[0]}
    ELAPSED=$(( $(date +%s) - started ))
    (( RC == 137 )) && RC=124  # still running 15 s after the interrupt: killed
    return 0
}

timed_stage() {  # NAME DEFAULT_TIMEOUT COMMAND...: a stage whose success is exit code 0
    local name=$1 budget=$2 var="GPU_SESSION_TIMEOUT_${1^^}"
    shift 2
    budget=${!var:-$budget}
    if (( $(left) < MIN_STAGE_S )); then record "$name" SKIP 0 "only $(left) s left"; return; fi
    stage "$name" "$budget" "$@"
    case $RC in
        0) record "$name" OK "$ELAPSED" "done" ;;
        124) record "$name" FAIL "$ELAPSED" "stopped at its limit of $LIMIT s (GPU_SESSION_TIMEOUT_${name^^}=$budget, or the time left)" ;;
        *) record "$name" FAIL "$ELAPSED" "exit code $RC (see the log above)" ;;
    esac
}

teacher_stage() {  # the experiment with the time left; stopping at the limit is its normal end
    local epoch
    if (( $(left) < MIN_TEACHER_S )); then record teacher SKIP 0 "only $(left) s left (needs $MIN_TEACHER_S)"; return; fi
    stage teacher "$(left)" python3 -m igkd teacher "${TEACHER_RUN[@]}" --set "out_dir=$RUNS"
    epoch=$(grep -o 'teacher epoch [0-9]*/[0-9]*' "$LOG" | tail -n 1 | cut -d' ' -f3)
    case $RC in
        0) record teacher OK "$ELAPSED" "finished (last epoch this session: ${epoch:-none}); $RUNS holds the trained teacher" ;;
        124) if [ -n "$epoch" ]; then record teacher OK "$ELAPSED" "stopped at its limit after epoch $epoch; the next session resumes"
             else record teacher FAIL "$ELAPSED" "stopped at its limit before an epoch finished"; fi ;;
        *) record teacher FAIL "$ELAPSED" "exit code $RC (see the log above)" ;;
    esac
}

source_commit() {  # this checkout's commit; a copy without git history has the one prepare_gpu_session.sh recorded
    local commit
    if commit=$(git rev-parse HEAD 2>/dev/null); then
        [ -z "$(git status --porcelain --untracked-files=no)" ] || commit+=-dirty
    elif [ -f .gpu-data/commit.txt ]; then
        commit=$(cat .gpu-data/commit.txt)
        sha256sum --quiet --status -c .gpu-data/source.sha256 2>/dev/null || commit+=+changed-after-prepare
    else
        commit=unknown
    fi
    echo "$commit"
}

pack() {  # the session folder and the run folder (no data cache, no temporary files, no state.pt of finished stages)
    local archive=$OUT/gpu-session.tar.gz list=$SESSION/packed-runs.txt parent base
    parent=$(dirname "$RUNS") base=$(basename "$RUNS")
    (cd "$parent" && find "$base" -name cache -prune -o -type f ! -name '.*.tmp' -print) | while read -r file; do
        [[ $file == */state.pt && -f $parent/${file%state.pt}final.json ]] || echo "$file"
    done >"$list"
    tar -czf "$archive" -C "$OUT" gpu-session -C "$parent" -T "$list" || return 1
    if (( $(stat -c %s "$archive") > PART_BYTES )); then
        split -b "$PART_BYTES" -d -a 1 "$archive" "$archive.part" && rm "$archive" || return 1
    fi
    find "$SESSION" -mindepth 1 ! -name log.txt -delete  # the archive holds them; log.txt also comes back on its own
    say "packed: $(cd "$OUT" && ls -l gpu-session.tar.gz* | awk '{ printf "%s %s bytes; ", $9, $5 }')unpack with: cat gpu-session.tar.gz* | tar -xzf -"
}

IGKD_GIT_COMMIT=$(source_commit)
export IGKD_GIT_COMMIT
COMMAND="$(env | grep '^GPU_SESSION_' | sort | tr '\n' ' ')bash benchmarks/gpu_session.sh"
say "gpu session $(date -u +%FT%TZ): $COMMAND"
say "commit $IGKD_GIT_COMMIT; budget $((DEADLINE - START)) s; stages: $STAGES; out $OUT"
printf 'stage\tstatus\tseconds\tdetail\n' >"$SESSION/stages.tsv"

# the steps outside the stages are bounded too, so nothing can hang (a CUDA start-up that never returns, say)
if timeout 60 python3 -c 'import pydantic, captum' 2>/dev/null; then
    record wheels OK 0 "pydantic and captum import already"
elif compgen -G '.whl/*.whl' >/dev/null \
        && timeout 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 \
        && PYTHONPATH=/tmp/site timeout 60 python3 -c 'import pydantic, captum' >>"$LOG" 2>&1; then
    export PYTHONPATH=/tmp/site:$PYTHONPATH
    record wheels OK $(( $(date +%s) - START )) "installed $(ls .whl | tr '\n' ' ')into /tmp/site"
else
    record wheels FAIL 0 "pydantic or captum is missing and .whl/ does not install (run benchmarks/prepare_gpu_session.sh here and carry .whl)"
fi

if timeout 120 python3 -m igkd info --json >"$SESSION/info.json" 2>>"$LOG"; then
    cat "$SESSION/info.json" >>"$LOG"
    for name in $STAGES; do
        case $name in
            smoke) timed_stage smoke 150 python3 benchmarks/gpu_smoke.py "${SMOKE[@]}" --output-dir "$RESULTS" ;;
            throughput) timed_stage throughput 240 python3 benchmarks/throughput.py "${THROUGHPUT[@]}" --output-dir "$RESULTS" ;;
            latency) timed_stage latency 120 python3 benchmarks/latency.py "${LATENCY[@]}" --out-dir "$RESULTS" ;;
            teacher) teacher_stage ;;
            *) record "$name" FAIL 0 "unknown stage (choose from smoke throughput latency teacher)" ;;
        esac
    done
else
    record igkd FAIL 0 "python3 -m igkd info fails (see the log): no stage can run"
fi

timeout 60 python3 benchmarks/gpu_session_summary.py "$SESSION" --runs "$RUNS" --command "$COMMAND" 2>&1 | tee -a "$LOG"
FAILED=$(awk -F'\t' 'NR > 1 && $2 == "FAIL" { print $1 }' "$SESSION/stages.tsv" | paste -sd ' ')
pack || { say "error: packing $SESSION failed"; exit 2; }
[ -z "$FAILED" ] || { say "failed stages: $FAILED"; exit 1; }
