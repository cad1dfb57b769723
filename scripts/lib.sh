# shellcheck shell=bash
# Shared by every protocol script (sourced, not run): argument checks, config resolution, output paths,
# and the one way a run is started, skipped or resumed. See docs/REPRODUCING.md for the protocols.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# User-given relative paths (DATA, OUTPUT_ROOT, weights) mean relative to where the user stands.
CALLER_DIR="$PWD"
cd "$REPO_ROOT"

PYTHON="${PYTHON:-python3}"

COMMON_ENV_HELP="Environment:
  TRAINER      trainer (default MaPLe); one of the folders of configs/trainers/, or ZeroshotCLIP
               (CoOp's configs; nothing to train: zeroshot.sh and the base2new scripts evaluate it)
  CFG          config name in configs/trainers/\$TRAINER/ (default: the protocol's official config,
               or 'demo' for the demo dataset)
  DATA         dataset root (default ./data in the repository)
  SHOTS        shots per class (default 16)
  LOADEP       epoch to evaluate (default: OPTIM.MAX_EPOCH of the config and overrides)
  EXTRA_OPTS   extra 'KEY VALUE' config overrides, split on spaces; trailing script arguments are
               overrides too and may contain spaces, e.g. TRAINER.MAPLE.CTX_INIT 'a photo of a'
  OUTPUT_ROOT  where the output/ tree goes (default ./output in the repository)
  FORCE=1      run again even when the run folder already holds a final result, and start over when it
               holds another config's run: the old run is moved aside to <folder>.old-N (never deleted)
  PYTHON       interpreter (default python3)"

# ---------------------------------------------------------------- messages and argument checks

list_datasets() {
    local file
    for file in configs/datasets/*.yaml; do
        [ -e "$file" ] && basename "$file" .yaml
    done
}

list_trainers() {
    local dir
    for dir in configs/trainers/*/; do
        [ -d "$dir" ] && basename "$dir"
    done
    # Zero-shot CLIP runs on CoOp's configs, as in the official zsclip script.
    echo ZeroshotCLIP
}

usage_text() {
    echo "$USAGE"
    echo
    echo "Datasets: $(list_datasets | paste -sd' ')"
    echo "Trainers: $(list_trainers | paste -sd' ')"
    echo
    echo "$COMMON_ENV_HELP"
}

# Print the calling script's USAGE (set before sourcing) with the valid names, then exit.
usage() {
    local status="${1:-0}"
    if [ "$status" = 0 ]; then usage_text; else usage_text >&2; fi
    exit "$status"
}

# Errors follow the project's one style (dassl/utils/errors.py): "<program>: error: <what to do>", one line.
die_usage() {
    echo "${0##*/}: error: $*" >&2
    echo >&2
    usage 2
}

die() {
    echo "${0##*/}: error: $*" >&2
    exit 1
}

# Handle -h/--help and check the positional count: expect_args MIN MAX "$@"
expect_args() {
    local min="$1" max="$2"
    shift 2
    case "${1:-}" in -h|--help) usage 0 ;; esac
    if [ "$#" -lt "$min" ]; then
        die_usage "expected at least $min argument(s), got $#"
    fi
    if [ "$max" -ge 0 ] && [ "$#" -gt "$max" ]; then
        die_usage "expected at most $max argument(s), got $#"
    fi
}

# The leading DATASET SEED of a protocol script's arguments, checked; the caller then does `shift 2`.
take_dataset_seed() {  # DATASET SEED [KEY VALUE ...]
    expect_args 2 -1 "$@"
    DATASET="$1"
    SEED="$2"
    check_dataset "$DATASET"
    check_uint SEED "$SEED"
}

check_dataset() {
    [ -f "configs/datasets/$1.yaml" ] || die_usage "unknown dataset '$1' (no configs/datasets/$1.yaml)"
}

check_trainer() {
    local names
    names="$(list_trainers)"
    grep -qxF -- "$1" <<<"$names" && return 0
    die_usage "unknown trainer '$1' (no configs/trainers/$1/)"
}

check_uint() {  # NAME VALUE
    [[ "$2" =~ ^[0-9]+$ ]] || die_usage "$1 must be a non-negative integer, got '$2'"
}

# An absolute path for a user-given one, relative paths taken from the caller's directory.
from_caller() {
    case "$1" in
        /*) echo "$1" ;;
        *) echo "$CALLER_DIR/$1" ;;
    esac
}

# ---------------------------------------------------------------- configuration

# Set the common settings from the environment, checked. Call after the script has set DATASET.
load_settings() {
    TRAINER="${TRAINER:-MaPLe}"
    SHOTS="${SHOTS:-16}"
    if [ -n "${DATA:-}" ]; then DATA="$(from_caller "$DATA")"; else DATA="$REPO_ROOT/data"; fi
    if [ -n "${OUTPUT_ROOT:-}" ]; then OUT="$(from_caller "$OUTPUT_ROOT")"; else OUT="$REPO_ROOT/output"; fi
    check_trainer "$TRAINER"
    check_uint SHOTS "$SHOTS"
}

# The official config of a protocol step for a trainer, as its class declares it (SPEC, trainers/method.py):
# default_cfg PROTOCOL TRAINER
default_cfg() {
    "$PYTHON" -m scripts.methods default-config "$1" "$2" || exit 1
}

# A trainer's config folder: its own name's, else the one its SPEC names (ZeroshotCLIP: CoOp's).
config_dir() {
    if [ -d "configs/trainers/$1" ]; then echo "configs/trainers/$1"; return; fi
    "$PYTHON" -m scripts.methods config-dir "$1" || exit 1
}

# The demo dataset and its transfer targets (demo_*) run the demo configs.
is_demo_dataset() {
    case "$1" in demo|demo_*) return 0 ;; *) return 1 ;; esac
}

# Set CFG and CONFIG_FILE: resolve_cfg PROTOCOL DATASET_THAT_PICKS_THE_DEMO_CONFIG
resolve_cfg() {
    if [ -z "${CFG:-}" ]; then
        if is_demo_dataset "$2"; then CFG=demo; else CFG="$(default_cfg "$1" "$TRAINER")"; fi
    fi
    local dir
    dir="$(config_dir "$TRAINER")"
    CONFIG_FILE="$dir/$CFG.yaml"
    if [ ! -f "$CONFIG_FILE" ]; then
        local available=()
        local file
        for file in "$dir"/*.yaml; do
            [ -e "$file" ] && available+=("$(basename "$file" .yaml)")
        done
        die_usage "no config '$CONFIG_FILE' for TRAINER=$TRAINER; CFG may be one of: ${available[*]:-(none)}"
    fi
}

# OPTS: the trailing script arguments plus EXTRA_OPTS, as config overrides.
collect_opts() {
    OPTS=("$@")
    if [ -n "${EXTRA_OPTS:-}" ]; then
        local extra
        read -r -a extra <<<"$EXTRA_OPTS"
        OPTS+=("${extra[@]}")
    fi
    if [ $(( ${#OPTS[@]} % 2 )) -ne 0 ]; then
        die_usage "config overrides must be KEY VALUE pairs, got: ${OPTS[*]}"
    fi
}

# CoOp's method keys come from the command line in its official few-shot and evaluation scripts.
coop_settings() {
    NCTX="${NCTX:-16}"
    CSC="${CSC:-False}"
    CTP="${CTP:-end}"
    COOP_OPTS=(TRAINER.COOP.N_CTX "$NCTX" TRAINER.COOP.CSC "$CSC" TRAINER.COOP.CLASS_TOKEN_POSITION "$CTP")
    COOP_SUFFIX="/nctx${NCTX}_csc${CSC}_ctp${CTP}"
}

# Set METHOD_OPTS and METHOD_SUFFIX for the all-class protocols (few-shot, cross-dataset).
method_settings() {
    METHOD_OPTS=()
    METHOD_SUFFIX=""
    if [ "$TRAINER" = CoOp ]; then
        coop_settings
        METHOD_OPTS=("${COOP_OPTS[@]}")
        METHOD_SUFFIX="$COOP_SUFFIX"
    fi
}

# Set LOADEP: the environment's, else the config's OPTIM.MAX_EPOCH after overrides (Dassl default 10).
resolve_loadep() {
    if [ -z "${LOADEP:-}" ]; then
        local args=("$CONFIG_FILE" OPTIM.MAX_EPOCH --default 10)
        # "--" keeps override values such as "-1" from being read as options.
        if [ "${#OPTS[@]}" -gt 0 ]; then args+=(-- "${OPTS[@]}"); fi
        LOADEP="$("$PYTHON" -m scripts.config_value "${args[@]}")" \
            || die "could not read OPTIM.MAX_EPOCH from $CONFIG_FILE"
    fi
    check_uint LOADEP "$LOADEP"
}

# ---------------------------------------------------------------- output paths (PROTOCOL.md §5)

base2new_dir() {  # SPLIT (train_base, test_base, test_new) DATASET SEED
    echo "$OUT/base2new/$1/$2/shots_$SHOTS/$TRAINER/$CFG/seed$3"
}

all_class_dir() {  # DATASET SEED: few-shot and cross-dataset source training on all classes
    echo "$OUT/$1/$TRAINER/${CFG}_${SHOTS}shots${METHOD_SUFFIX}/seed$2"
}

evaluation_dir() {  # DATASET SEED: cross-dataset / domain-generalisation targets
    echo "$OUT/evaluation/$TRAINER/${CFG}_${SHOTS}shots${METHOD_SUFFIX}/$1/seed$2"
}

# ---------------------------------------------------------------- running

# The run's result when its newest log shows one (the single definition of "finished").
run_result() {  # DIR [--test-log]
    "$PYTHON" -m scripts.run_result "$@"
}

# The base command every run shares: base_cmd DATASET SEED DIR (SEED may be empty: no --seed)
base_cmd() {
    CMD=("$PYTHON" train.py --root "$DATA")
    if [ -n "$2" ]; then CMD+=(--seed "$2"); fi
    CMD+=(--trainer "$TRAINER" --dataset-config-file "configs/datasets/$1.yaml"
          --config-file "$CONFIG_FILE" --output-dir "$3")
}

# Run CMD for DIR unless DIR already holds this command's finished run; print "LABEL accuracy: X%" at the end.
# A result counts only when the folder is this config's run (train.py --check-run-folder compares its
# config.yaml with the command's config); a folder of another run stops the script with train.py's one-line
# error. A folder without a result is resumed (train.py continues from its last checkpoint), as officially.
# FORCE=1 runs the job again, train.py moving the old run aside. With CHECK_FINISHED=1 (sweep.sh) the job is
# only checked: its result is printed and the exit status is 0 when it is finished, 1 otherwise.
# kind is "train" or "test" (evaluation-only).
# With PRINT_RUN_DIR=1 (sweep.sh, to find jobs that share a run folder) only the folder is printed.
run_job() {  # LABEL KIND DIR
    local label="$1" kind="$2" dir="$3"
    if [ "${PRINT_RUN_DIR:-0}" = 1 ]; then echo "$dir"; exit 0; fi
    local flag=()
    if [ "$kind" = test ]; then flag=(--test-log); fi
    local value finished=0
    if [ "${FORCE:-0}" != 1 ] && value="$(run_result "$dir" ${flag[@]+"${flag[@]}"})"; then
        # flags go before the trailing KEY VALUE overrides, which train.py reads to the end of the line
        "${CMD[0]}" "${CMD[1]}" --check-run-folder "${CMD[@]:2}"
        finished=1
    fi
    if [ "${CHECK_FINISHED:-0}" = 1 ]; then
        if [ "$finished" = 1 ]; then echo "$value"; exit 0; else exit 1; fi
    fi
    if [ "$finished" = 1 ]; then
        echo "Results are available in ${dir}: finished, skipping (FORCE=1 runs it again)."
    else
        if [ "${FORCE:-0}" = 1 ]; then
            CMD=("${CMD[0]}" "${CMD[1]}" --force "${CMD[@]:2}")
        fi
        if [ -d "$dir" ] && [ "${FORCE:-0}" = 1 ]; then
            echo "FORCE=1: running ${dir} again (train.py moves the run there aside)"
        elif [ -d "$dir" ]; then
            echo "Results are available in ${dir}. Resuming..."
        else
            echo "Run this job and save the output to ${dir}"
        fi
        echo "+ $(printf '%q ' "${CMD[@]}")"
        "${CMD[@]}"
        value="$(run_result "$dir" ${flag[@]+"${flag[@]}"})" \
            || die "train.py ended without a final result in $dir (see its log.txt)"
    fi
    echo "$label accuracy: ${value}%"
}

# Zero-shot CLIP, evaluation only (nothing is trained): SUB=all on all classes into ZeroshotCLIP/CFG/DATASET
# (no seed, as officially), SUB=base|new on one base-to-novel half into test_SUB/, where the tables read the
# base results of evaluated-only experiments. zeroshot.sh runs it, and so do base2new_train.sh (SUB=base)
# and base2new_test.sh for TRAINER=ZeroshotCLIP.
zeroshot_eval() {  # SUB DATASET [SEED]; after load_settings, resolve_cfg and collect_opts
    local sub="$1" dataset="$2" seed="${3:-}" label extra=()
    case "$sub" in
        all)
            DIR="$OUT/ZeroshotCLIP/$CFG/$dataset"
            label=zero-shot
            ;;
        base|new)
            seed="${seed:-1}"
            DIR="$(base2new_dir "test_$sub" "$dataset" "$seed")"
            if [ "$sub" = base ]; then label=base; else label=novel; fi
            extra=(DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES "$sub")
            ;;
        *) die_usage "SUB must be 'all', 'base' or 'new', got '$sub'" ;;
    esac
    base_cmd "$dataset" "$seed" "$DIR"
    CMD+=(--eval-only ${extra[@]+"${extra[@]}"} ${OPTS[@]+"${OPTS[@]}"})
    run_job "$label" test "$DIR"
}

require_model_dir() {  # DIR HINT
    [ -d "$1" ] || die "no trained model in $1 ($2)"
}

# The model an evaluation loads: $MODEL_DIR when set (relative to the caller), else the training run's folder.
resolve_model_dir() {  # TRAINING_DIR HINT_WHEN_MISSING
    if [ -n "${MODEL_DIR:-}" ]; then
        MODEL_DIR="$(from_caller "$MODEL_DIR")"
        require_model_dir "$MODEL_DIR" "MODEL_DIR must hold the trained prompt checkpoint folder(s)"
    else
        MODEL_DIR="$1"
        require_model_dir "$MODEL_DIR" "$2"
    fi
}

# Few-shot and cross-dataset source training share one shape: all classes, SHOTS shots, skip when finished.
train_all_classes() {  # PROTOCOL DATASET SEED [KEY VALUE ...]
    local protocol="$1"
    shift
    take_dataset_seed "$@"
    shift 2
    load_settings
    resolve_cfg "$protocol" "$DATASET"
    collect_opts "$@"
    method_settings
    DIR="$(all_class_dir "$DATASET" "$SEED")"
    base_cmd "$DATASET" "$SEED" "$DIR"
    CMD+=(DATASET.NUM_SHOTS "$SHOTS" ${METHOD_OPTS[@]+"${METHOD_OPTS[@]}"} ${OPTS[@]+"${OPTS[@]}"})
    run_job "$DATASET" train "$DIR"
}
