#!/usr/bin/env bash
# One call of the lent GPU machine (an H100 or an H200), from the repository root, finished within SECONDS: the
# time the call really has, that is its timeout_s, set from the device time left (benchmarks/README.md gives the calls).
#
#     bash benchmarks/gpu_session.sh 300                                        # smoke, latency, throughput (about 5 min)
#     GPU_SESSION_STAGES=teacher bash benchmarks/gpu_session.sh 420             # the teacher with the time left
#     GPU_SESSION_TINY=1 OUT=/tmp/session bash benchmarks/gpu_session.sh 120    # at tiny scale on the CPU
#
#   wheels      .whl/ (benchmarks/prepare_gpu_session.sh) installed into /tmp/site, unless pydantic and captum import
#   gate        what every stage needs: torch, pydantic and (on the GPU) a CUDA kernel; one line whatever the error
#   smoke       benchmarks/gpu_smoke.py: every CUDA branch of igkd, one OK/FAIL/SKIP line each
#   latency     benchmarks/latency.py: teacher vs student, PyTorch (CUDA events first, then the CPU) and onnxruntime
#   throughput  benchmarks/throughput.py: IG maps/s vs Captum (the paper's call and its fastest setting), student
#               training vs the paper-style loop, then 1 and 4 concurrent trainings (stopped after 60 s each)
#   teacher     with the time left (at least 90 s): the next epochs of `igkd teacher -c cifar10_jpeg` in gpu-runs/;
#               stopped at its limit, it resumes from the last finished epoch (state.pt) in the next call
#
# Stages run in the order of GPU_SESSION_STAGES (default "smoke latency throughput"), each under its own timeout capped
# by the time left; a stage that fails or is stopped does not stop the rest. Each benchmark writes its JSON after every
# check, part or backend, so a stopped stage keeps what it finished. The script stops its last stage early enough to
# summarise and pack before SECONDS.
#
# A call returns only what is in $OUT: at most 8 files of 16 MiB, 64 MiB in all. Here that is gpu-session/log.txt
# (written as the call runs) and gpu-session.tar.gz.part0, .part1 (15 MiB each, 30 MiB in all, so that the last
# archive and the one being written fit beside the log), which hold gpu-session/ (log.txt, stages.tsv, info.json,
# results/, summary.md, summary.json) and the run folder (no data cache, no state.pt of a finished stage). The archive
# is written after the gate, within a few seconds of every result or teacher epoch a stage writes, and after every
# stage, so a call stopped at any point returns what it had done. Unpack with: cat gpu-session.tar.gz.part* | tar -xzf -
# Exit code 1 when a stage failed, 2 for bad input or when nothing could be packed.
#
# Environment: OUT (default: a new temporary folder), GPU_SESSION_TINY=1 (CPU, digits, tiny models), GPU_SESSION_STAGES,
# GPU_SESSION_TIMEOUT_<STAGE> (seconds, e.g. GPU_SESSION_TIMEOUT_THROUGHPUT=240), GPU_SESSION_ARGS_<STAGE> (arguments
# added to a stage's command, split at spaces, e.g. GPU_SESSION_ARGS_THROUGHPUT="--parallel 1"), GPU_SESSION_TEACHER (a
# trained teacher checkpoint for the speed figures; default untrained: speed does not depend on the weights),
# GPU_SESSION_RUNS (the run folder, default gpu-runs).
set -u
cd "$(dirname "$0")/.." || exit 2

STAGE_NAMES="smoke latency throughput teacher"
declare -A STAGE_TIMEOUT_S=([smoke]=90 [latency]=60 [throughput]=150)  # the teacher takes the time left
END_MARGIN_S=10   # finished this long before SECONDS: the copy of $OUT back is part of the call
KILL_GRACE_S=15   # a stage still running this long after its interrupt is killed
WRAP_UP_S=15      # the summary and the archive after the last stage
MIN_STAGE_S=20
MIN_TEACHER_S=90
PACK_POLL_S=2     # how often a running stage is looked at for new results to pack
PART_BYTES=$((15 * 1024 * 1024))      # under the 16 MiB a returned file may have
ARCHIVE_BYTES=$((2 * PART_BYTES))     # twice this and the log stay under the 64 MiB a call returns
MIN_CALL_S=$((END_MARGIN_S + KILL_GRACE_S + WRAP_UP_S + MIN_STAGE_S))

fail() { echo "error: $*" >&2; exit 2; }

[[ $# == 1 && $1 =~ ^[0-9]+$ ]] && (( $1 >= MIN_CALL_S )) \
    || fail "give the seconds this call has (its timeout_s, at least $MIN_CALL_S), e.g. bash benchmarks/gpu_session.sh 300"
CALL_S=$1
STAGES=${GPU_SESSION_STAGES:-smoke latency throughput}
for name in $STAGES; do
    [[ " $STAGE_NAMES " == *" $name "* ]] || fail "GPU_SESSION_STAGES: unknown stage '$name' (choose from $STAGE_NAMES)"
    var=GPU_SESSION_TIMEOUT_${name^^}
    [[ ${!var:-1} =~ ^[0-9]+$ ]] || fail "$var=${!var}: give whole seconds"
done

START=$(date +%s)
DEADLINE=$((START + CALL_S - END_MARGIN_S))
OUT=${OUT:-$(mktemp -d)}
WORK=$(mktemp -d) || fail "cannot create a temporary folder"
trap 'rm -rf "$WORK"' EXIT
SESSION=$WORK/gpu-session  # grows here; only the log and the archive are in $OUT
RESULTS=$SESSION/results
LOG=$OUT/gpu-session/log.txt
STAMP=$WORK/packed.stamp   # older than anything not packed yet
RUNS=${GPU_SESSION_RUNS:-gpu-runs}
TEACHER=${GPU_SESSION_TEACHER:-}
rm -rf "$OUT/gpu-session" "$OUT"/gpu-session.tar.gz* "$OUT"/.next.tar.gz*  # a folder used before starts empty
mkdir -p "$RESULTS" "$RUNS" "$OUT/gpu-session" || fail "cannot create $OUT/gpu-session and $RUNS"
RUNS=$(cd "$RUNS" && pwd)
RUNS_PARENT=$(dirname "$RUNS") RUNS_BASE=$(basename "$RUNS")
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
[ -d .gpu-data ] && export IGKD_DATA_DIR=$PWD/.gpu-data

if [ "${GPU_SESSION_TINY:-0}" = 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny tensors gain nothing from threads
    DEVICE=cpu
    TINY_TEACHER=mobilenetv2_cifar:width=0.25:k=10 TINY_STUDENT=mobilenetv2_cifar:width=0.25:k=14
    SMOKE=(--device cpu --skip compile)
    THROUGHPUT=(--tiny --steps 3 --repeats 2 --ig-images 64 --captum-images 16 --captum-grid 8:none,16:64 --captum-sweep-images 16
                --set attribution.steps=8 --parallel 1 --parallel-timeout 60)
    LATENCY=(--arch "$TINY_TEACHER" --arch "$TINY_STUDENT" --image-size 8 --batch 1 --batch 8 --warmup 1 --repeats 3)
    TEACHER_RUN=(-c digits --set name=tiny --set device=cpu --set data.image_size=8 --set data.crop_padding=1
                 --set "teacher.arch=$TINY_TEACHER" --set teacher.train.epochs=2)
else
    DEVICE=cuda
    SMOKE=()
    THROUGHPUT=(-c cifar10_jpeg --set "out_dir=$RUNS" --set student.train.batch_size=512 --steps 30 --repeats 2 --ig-images 2000
                --captum-images 256 --captum-sweep-images 64 --parallel 1,4 --parallel-timeout 60)
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

left() { echo $((DEADLINE - $(date +%s) - KILL_GRACE_S - WRAP_UP_S)); }  # what a stage may still be given

capped() { local s; s=$(left); (( s < 1 )) && s=1; echo $(( $1 < s ? $1 : s )); }  # SECONDS, or less when less is left

run_files() {  # the run folder's files to pack, relative to its parent: no data cache, no temporary files, no state.pt of a finished stage
    (cd "$RUNS_PARENT" && find "$RUNS_BASE" -name cache -prune -o -type f ! -name '.*.tmp' -print) | while read -r file; do
        [[ $file == */state.pt && -f $RUNS_PARENT/${file%state.pt}final.json ]] || echo "$file"
    done
}

pack() {  # the session folder and the run folder into $OUT/gpu-session.tar.gz.part*: written beside the last archive, then swapped in
    local list=$WORK/packed-runs.txt next=$OUT/.next.tar.gz.part part bytes status
    cp "$LOG" "$SESSION/log.txt"
    run_files >"$list"
    bytes=$( { du -sb "$SESSION" | cut -f1; (cd "$RUNS_PARENT" && xargs -r -d '\n' stat -c %s <"$list"); } | awk '{ s += $1 } END { print s + 0 }')
    if (( bytes > ARCHIVE_BYTES - 1024 * 1024 )); then  # files are stored whole (weights hardly compress); 1 MiB for headers
        say "note: $RUNS is left out of the archive: with it, it would pass $((ARCHIVE_BYTES >> 20)) MiB"
        : >"$list"
    fi
    rm -f "$next"*
    tar -czf - -C "$WORK" gpu-session -C "$RUNS_PARENT" -T "$list" | split -b "$PART_BYTES" -d -a 1 - "$next"
    status=("${PIPESTATUS[@]}")
    (( status[0] <= 1 && status[1] == 0 )) || return 1  # tar: 1 is a file that changed while read (the teacher's metrics)
    rm -f "$OUT"/gpu-session.tar.gz.part*
    for part in "$next"*; do mv "$part" "$OUT/gpu-session.tar.gz.part${part#"$next"}"; done
}

wrap_up() {  # the summary so far (within the time left) and the archive; stamps what it packed
    local limit
    touch "$STAMP.next"
    limit=$(( DEADLINE - $(date +%s) - 5 ))
    (( limit > 30 )) && limit=30
    (( limit > 0 )) && timeout "$limit" python3 benchmarks/gpu_session_summary.py "$SESSION" --runs "$RUNS" --command "$COMMAND" \
        >/dev/null 2>>"$LOG"
    mv "$STAMP.next" "$STAMP"
    pack
}

pack_while_running() {  # in the background during a stage, until $WORK/stage.done: packs within PACK_POLL_S of new results
    local tick
    while :; do
        for (( tick = 0; tick < 4 * PACK_POLL_S; tick++ )); do  # the stage's end is seen within a quarter second, and
            [ -e "$WORK/stage.done" ] && return 0                # left to the wrap-up that follows every stage
            sleep 0.25
        done
        [ -n "$(find "$RESULTS" "$RUNS" -name cache -prune -o -type f -newer "$STAMP" -print -quit)" ] && wrap_up
    done
}

stage() {  # NAME TIMEOUT COMMAND...: run it with GPU_SESSION_ARGS_<NAME> under TIMEOUT; sets LIMIT, RC (124: stopped at LIMIT), ELAPSED
    local name=$1 started watcher extra var="GPU_SESSION_ARGS_${1^^}"
    LIMIT=$2
    shift 2
    read -ra extra <<<"${!var:-}"
    say "== $name: timeout ${LIMIT} s: $* ${extra[*]}"
    started=$(date +%s)
    rm -f "$WORK/stage.done"
    pack_while_running &
    watcher=$!
    timeout -s INT -k "$KILL_GRACE_S" "$LIMIT" "$@" "${extra[@]}" 2>&1 | tee -a "$LOG"
    RC=${PIPESTATUS[0]}
    touch "$WORK/stage.done"
    wait "$watcher"
    ELAPSED=$(( $(date +%s) - started ))
    (( RC == 137 )) && RC=124  # still running KILL_GRACE_S after the interrupt: killed
    return 0
}

timed_stage() {  # NAME COMMAND...: a stage whose success is exit code 0, under its timeout (GPU_SESSION_TIMEOUT_<NAME> or the default)
    local name=$1 var="GPU_SESSION_TIMEOUT_${1^^}" budget
    shift
    budget=${!var:-${STAGE_TIMEOUT_S[$name]}}
    if (( $(left) < MIN_STAGE_S )); then record "$name" SKIP 0 "only $(left) s left"; return; fi
    stage "$name" "$(capped "$budget")" "$@"
    case $RC in
        0) record "$name" OK "$ELAPSED" "done" ;;
        124) record "$name" FAIL "$ELAPSED" "stopped at its limit of $LIMIT s ($var=$budget, or the time left); whatever it wrote is kept" ;;
        *) record "$name" FAIL "$ELAPSED" "exit code $RC (see the log above); whatever it wrote is kept" ;;
    esac
}

teacher_stage() {  # the experiment with the time left; stopping at the limit is its normal end
    local epoch
    if (( $(left) < MIN_TEACHER_S )); then record teacher SKIP 0 "only $(left) s left (needs $MIN_TEACHER_S)"; return; fi
    stage teacher "$(left)" python3 -m igkd teacher "${TEACHER_RUN[@]}" --set "out_dir=$RUNS"
    epoch=$(grep -o 'teacher epoch [0-9]*/[0-9]*' "$LOG" | tail -n 1 | cut -d' ' -f3)
    case $RC in
        0) record teacher OK "$ELAPSED" "finished (last epoch this call: ${epoch:-none}); $RUNS holds the trained teacher" ;;
        124) if [ -n "$epoch" ]; then record teacher OK "$ELAPSED" "stopped at its limit after epoch $epoch; the next call resumes"
             else record teacher FAIL "$ELAPSED" "stopped at its limit before an epoch finished"; fi ;;
        *) record teacher FAIL "$ELAPSED" "exit code $RC (see the log above)" ;;
    esac
}

run_stage() {  # NAME
    case $1 in
        smoke) timed_stage smoke python3 benchmarks/gpu_smoke.py "${SMOKE[@]}" --output-dir "$RESULTS" ;;
        latency) timed_stage latency python3 benchmarks/latency.py "${LATENCY[@]}" --out-dir "$RESULTS" ;;
        throughput) timed_stage throughput python3 benchmarks/throughput.py "${THROUGHPUT[@]}" --output-dir "$RESULTS" ;;
        teacher) teacher_stage ;;
    esac
}

install_wheels() {  # pydantic and captum, from .whl/ when this Python lacks them
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
}

gate() {  # torch, pydantic and a kernel on $DEVICE, which every stage needs: one OK or FAIL line, whatever the exception
    local line rc started limit
    started=$(date +%s) limit=$(capped 120)
    line=$(timeout "$limit" python3 - "$DEVICE" 2>>"$LOG" <<'EOF'
import sys

try:
    import pydantic
    import torch

    device = torch.device(sys.argv[1])
    torch.ones(1, device=device).add_(1).item()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), pydantic {pydantic.__version__}, {name}")
except Exception as exc:  # any failure, whatever its type, is the one line the gate reports
    print(f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500])
    sys.exit(1)
EOF
    )
    rc=$?
    if (( rc == 0 )); then record gate OK $(( $(date +%s) - started )) "$line"; return 0; fi
    (( rc == 124 )) && line="no answer within $limit s"
    record gate FAIL $(( $(date +%s) - started )) "${line:-python3 exited with code $rc (see the log)}: no stage can run"
    return 1
}

git_commit() {  # this checkout's commit as igkd records it (-dirty: code changed, results aside), or unknown
    PYTHONPATH=$PWD/src timeout 60 python3 -c 'from igkd.runtime.device import git_commit; print(git_commit())' 2>/dev/null || echo unknown
}

source_commit() {  # this checkout's commit; a copy without git history has the one prepare_gpu_session.sh recorded
    local commit
    commit=$(git_commit)
    if [ "$commit" = unknown ] && [ -f .gpu-data/commit.txt ]; then
        commit=$(cat .gpu-data/commit.txt)
        sha256sum --quiet --status -c .gpu-data/source.sha256 2>/dev/null || commit+=+changed-after-prepare
    fi
    echo "$commit"
}

IGKD_GIT_COMMIT=$(source_commit)
export IGKD_GIT_COMMIT
COMMAND="$(env | grep '^GPU_SESSION_' | sort | tr '\n' ' ')bash benchmarks/gpu_session.sh $CALL_S"
say "gpu session $(date -u +%FT%TZ): $COMMAND"
say "commit $IGKD_GIT_COMMIT; $CALL_S s, done by $((CALL_S - END_MARGIN_S)) s; stages: $STAGES; out $OUT"
printf 'stage\tstatus\tseconds\tdetail\n' >"$SESSION/stages.tsv"
touch "$STAMP"

# the steps outside the stages are bounded too, so nothing can hang (a CUDA start-up that never returns, say)
install_wheels
if gate; then
    timeout "$(capped 60)" python3 -m igkd info --json >"$SESSION/info.json" 2>>"$LOG" \
        || { rm -f "$SESSION/info.json"; say "note: igkd info failed (see the log); the summary names the device from the gate's line"; }
    for name in $STAGES; do
        wrap_up  # what is done so far (the gate's line first) comes back whatever the stage does
        run_stage "$name"
    done
fi
wrap_up || { say "error: packing $SESSION failed"; exit 2; }
[ -f "$SESSION/summary.md" ] && tee -a "$LOG" <"$SESSION/summary.md"
FAILED=$(awk -F'\t' 'NR > 1 && $2 == "FAIL" { print $1 }' "$SESSION/stages.tsv" | paste -sd ' ')
say "packed: $(cd "$OUT" && ls -l gpu-session.tar.gz.part* | awk '{ printf "%s %s bytes; ", $9, $5 }')unpack with: cat gpu-session.tar.gz.part* | tar -xzf -"
[ -z "$FAILED" ] || { say "failed stages: $FAILED"; exit 1; }
