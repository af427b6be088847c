#!/usr/bin/env bash
# Prepare what benchmarks/gpu_session.sh needs on the GPU machine, which has no network. Run it here, from anywhere:
#
#     bash benchmarks/prepare_gpu_session.sh
#
#   .whl/       the wheels that machine lacks (cp312, manylinux x86_64): pydantic, pydantic-core (the version pydantic
#               pins), annotated-types, typing-inspection and captum, at the versions installed here; and typing-extensions,
#               which it has, but pydantic needs a recent one (>= 4.14.1) and that machine's version is not known
#   .gpu-data/  the data archives from ${IGKD_DATA_DIR:-../shared/data}, and the commit of this checkout with the
#               checksums of its tracked files (the copy sent there has no git history: see gpu_session.sh)
#
# Both folders are ignored by git. It then prints what a device call carries and its total, which must stay under
# 60 MiB (the limit is 64 MiB): the Tiny ImageNet archive, which only `igkd transfer` reads, is left out when it
# would take the total over. Run it again before each session: it downloads and copies only what changed.
set -u
cd "$(dirname "$0")/.." || exit 2

LIMIT_BYTES=$((60 * 1024 * 1024))
DATA=${IGKD_DATA_DIR:-../shared/data}
ARCHIVES=(cifar10-jpeg-train.tar.gz cifar10-jpeg-test.tar.gz)
TRANSFER_ARCHIVE=tiny-imagenet-cifar10.tar.gz
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

fail() { echo "error: $*" >&2; exit 2; }

installed_version() {  # NAME: its version in this Python
    python3 -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null \
        || fail "$1 is not installed here; install the project's test extra first: python3 -m pip install -e '.[test]'"
}

fetch() {  # NAME VERSION: its wheel in .whl/, replacing any other version of it (two versions stop the install there)
    local stem=${1//-/_}
    compgen -G ".whl/$stem-$2-*.whl" >/dev/null && return 0
    rm -f .whl/"$stem"-*.whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
        -d .whl "$1==$2" || fail "pip could not download $1==$2 for cp312 manylinux x86_64"
}

pinned_core() {  # WHEEL: the pydantic-core version a pydantic wheel pins
    python3 - "$1" <<'EOF'
import re, sys, zipfile

with zipfile.ZipFile(sys.argv[1]) as wheel:
    metadata = next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
    print(re.search(r"^Requires-Dist: pydantic-core==(\S+)", wheel.read(metadata).decode(), re.M).group(1))
EOF
}

copy() {  # NAME: the archive from $DATA into .gpu-data/ unless the same file is there
    [ -f "$DATA/$1" ] || fail "$DATA/$1 not found; set IGKD_DATA_DIR to the folder that holds the data archives"
    cmp -s "$DATA/$1" ".gpu-data/$1" || install -m 0644 "$DATA/$1" ".gpu-data/$1" || fail "cannot copy $DATA/$1 into .gpu-data/"
}

travel_bytes() {  # what a device call sends: tracked and untracked-not-ignored files, and the carried folders
    { git ls-files -z --cached --others --exclude-standard; find .whl .gpu-data gpu-runs -type f -print0 2>/dev/null; } \
        | xargs -0 stat -c %s 2>/dev/null | awk '{ total += $1 } END { print total + 0 }'
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

mkdir -p .whl .gpu-data || fail "cannot create .whl/ and .gpu-data/ here"
pydantic=$(installed_version pydantic)
fetch pydantic "$pydantic"
fetch pydantic-core "$(pinned_core .whl/pydantic-"$pydantic"-*.whl)" || exit 2
for name in annotated-types typing-inspection typing-extensions captum; do
    fetch "$name" "$(installed_version "$name")"
done

for name in "${ARCHIVES[@]}" "$TRANSFER_ARCHIVE"; do
    copy "$name"
done
if (( $(travel_bytes) > LIMIT_BYTES )); then
    rm -f ".gpu-data/$TRANSFER_ARCHIVE"
    echo "left out $TRANSFER_ARCHIVE (only igkd transfer reads it): with it the call would carry more than $(mib "$LIMIT_BYTES")"
fi

commit=$(PYTHONPATH=$PWD/src python3 -c 'from igkd.runtime.device import git_commit; print(git_commit())') && [ "$commit" != unknown ] \
    || fail "not a git checkout with igkd's source (src/igkd)"
echo "$commit" >.gpu-data/commit.txt
git ls-files -z | xargs -0 sha256sum 2>/dev/null >.gpu-data/source.sha256

total=$(travel_bytes)
carry='".whl", ".gpu-data"'
[ -d gpu-runs ] && carry+=', "gpu-runs"'
ls -l .whl .gpu-data
echo "commit $commit; .whl $(du -sh .whl | cut -f1), .gpu-data $(du -sh .gpu-data | cut -f1)$([ -d gpu-runs ] && echo ", gpu-runs $(du -sh gpu-runs | cut -f1)")"
echo "a device call carries $(mib "$total") in all (limit 64 MiB); carry: [$carry]"
(( total <= LIMIT_BYTES )) || fail "that is over $(mib "$LIMIT_BYTES"): carry less (an older gpu-runs/ folder?)"
