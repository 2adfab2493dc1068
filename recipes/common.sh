# Shared by the recipes in this folder: sourced, never run on its own.
#
# A recipe parses its options (its own, then `common_option`), declares its
# stages with `add_stage`, and ends with `run_stages`, which either prints the
# resolved plan (--dry-run: one JSON object per stage from `python -m
# nfnet.plan`, no data, no accelerator) or runs the stages in order, skipping
# those whose workdir already holds results.json, then prints the results
# table. The programs themselves resume an unfinished workdir.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
# The programs and configs import from the repository: run from any directory.
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
RESULTS_FILE=results.json
# On hosts other than process 0, results.json (written by process 0) may show
# up on the shared filesystem a little after the program exits there.
RESULTS_WAIT_S=${RESULTS_WAIT_S:-300}

DRY_RUN=0
WORKDIR=${WORKDIR:-}
STAGES=""                  # --stages a,b: run only these (default: all)
DISTRIBUTED=0              # --distributed: let jax.distributed find the cluster
COORDINATOR=${JAX_COORDINATOR_ADDRESS:-}
HOSTS=${JAX_NUM_PROCESSES:-}
HOST_ID=${JAX_PROCESS_ID:-}
PRETRAIN_EXTRA=()          # --pretrain-arg ARG (repeatable)
FINETUNE_EXTRA=()          # --finetune-arg ARG (repeatable)
ALL_EXTRA=()               # everything after --

KNOWN_STAGES=()
STAGE_NAMES=()
STAGE_PROGRAMS=()
STAGE_WORKDIRS=()
STAGE_PAPERS=()
STAGE_NEEDS=()
STAGE_ARGS=()              # each: the program's argv, quoted with printf %q

die() {
  echo "error: $*" >&2
  exit 2
}

note() {
  echo "note: $*" >&2
}

# The recipe's header comment (after the shebang) is its --help text.
usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

# opt_value "$@": the value of `--name value` or `--name=value` in VALUE, and
# how many arguments that took in SHIFT.
opt_value() {
  if [[ $1 == *=* ]]; then
    VALUE=${1#*=}
    SHIFT=1
  elif (($# >= 2)); then
    VALUE=$2
    SHIFT=2
  else
    die "$1 needs a value; see --help."
  fi
}

# common_option "$@": the options every recipe takes. Sets SHIFT.
common_option() {
  case $1 in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; SHIFT=1 ;;
    --workdir|--workdir=*) opt_value "$@"; WORKDIR=$VALUE ;;
    --stages|--stages=*) opt_value "$@"; STAGES=$VALUE ;;
    --coordinator|--coordinator=*) opt_value "$@"; COORDINATOR=$VALUE ;;
    --hosts|--hosts=*) opt_value "$@"; HOSTS=$VALUE ;;
    --host-id|--host-id=*) opt_value "$@"; HOST_ID=$VALUE ;;
    --distributed) DISTRIBUTED=1; SHIFT=1 ;;
    --pretrain-arg|--pretrain-arg=*) opt_value "$@"; PRETRAIN_EXTRA+=("$VALUE") ;;
    --finetune-arg|--finetune-arg=*) opt_value "$@"; FINETUNE_EXTRA+=("$VALUE") ;;
    --) shift; ALL_EXTRA+=("$@"); SHIFT=$(($# + 1)) ;;
    *) die "unknown option $1; see --help." ;;
  esac
}

# parse_options HANDLER "$@": the recipe's HANDLER (sets SHIFT, 0 when the
# option is not its own) first, then the common options.
parse_options() {
  local handler=$1
  shift
  while (($#)); do
    SHIFT=0
    "$handler" "$@"
    if ((SHIFT == 0)); then
      common_option "$@"
    fi
    shift "$SHIFT"
  done
}

absolute_path() {
  realpath -m -- "$1"
}

is_integer() {
  [[ $1 =~ ^[0-9]+$ ]]
}

# After parsing: the environment the programs read for a multi-host run, and
# a dry run's guarantee that JAX stays on the CPU.
setup_run() {
  if ((DRY_RUN)); then
    export JAX_PLATFORMS=cpu
  fi
  if [[ -n $COORDINATOR ]]; then
    [[ -n $HOSTS && -n $HOST_ID ]] || die "--coordinator needs --hosts N and" \
      "--host-id I (or JAX_NUM_PROCESSES and JAX_PROCESS_ID): the same" \
      "command on every host, each with its own --host-id 0..N-1."
  elif [[ -n $HOSTS || -n $HOST_ID ]] && ((!DISTRIBUTED)); then
    die "--hosts/--host-id need --coordinator HOST:PORT (process 0's address)," \
      "or --distributed where JAX finds the cluster itself (TPU pods, SLURM)."
  fi
  if [[ -n $HOSTS ]]; then
    is_integer "$HOSTS" && ((HOSTS >= 1)) || die "--hosts must be a positive" \
      "integer, got '$HOSTS'."
    export JAX_NUM_PROCESSES=$HOSTS
  fi
  if [[ -n $HOST_ID ]]; then
    is_integer "$HOST_ID" || die "--host-id must be an integer, got '$HOST_ID'."
    if [[ -n $HOSTS ]] && ((HOST_ID >= HOSTS)); then
      die "--host-id $HOST_ID is out of range for --hosts $HOSTS (0..$((HOSTS - 1)))."
    fi
    export JAX_PROCESS_ID=$HOST_ID
  fi
  if [[ -n $COORDINATOR ]]; then
    export JAX_COORDINATOR_ADDRESS=$COORDINATOR
  fi
}

# Process 0 prints the results table (every host runs the same recipe).
is_first_host() {
  [[ -z $HOST_ID || $HOST_ID == 0 ]]
}

# A data location as a source string: `kind:...` as given, a directory of
# shards (python -m data.convert output) as arrayrecord:DIR/SPLIT-*.array_record.
shards_source() {
  local location=$1 split=$2
  if [[ $location =~ ^(arrayrecord|tfrecord|tfds|folder): ]]; then
    echo "$location"
  else
    echo "arrayrecord:$(absolute_path "$location")/$split-*.array_record"
  fi
}

# A labelled image folder (class sub-folders) as folder:DIR; sources as given.
folder_source() {
  local location=$1
  if [[ $location =~ ^(arrayrecord|tfrecord|tfds|folder): ]]; then
    echo "$location"
  else
    echo "folder:$(absolute_path "$location")"
  fi
}

# check_source WHAT SOURCE: fail now, not hours into a run, when a local
# source cannot exist. Remote paths (gs://...) are left to the loader.
check_source() {
  local what=$1 spec=$2
  local kind=${spec%%:*} rest=${spec#*:}
  if [[ $rest == *://* ]]; then
    return 0
  fi
  case $kind in
    arrayrecord|tfrecord)
      compgen -G "$rest" >/dev/null || die "$what: no file matches $rest" \
        "(from $spec). Point the option at the shards (see --help)." ;;
    folder)
      [[ -d $rest ]] || die "$what: $rest is not a directory (from $spec)." ;;
    tfds)
      local name=${rest%%/*}
      name=${name%%:*}
      local data_dir=${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}
      [[ -d $data_dir/$name ]] || die "$what: no TFDS dataset '$name' in" \
        "$data_dir. Prepare it once with: tfds build $name --data_dir" \
        "$data_dir --file_format=array_record (ImageNet needs its tars in" \
        "$data_dir/downloads/manual first)." ;;
    *)
      die "$what: '$spec' is not a data source; use a directory or" \
        "arrayrecord:GLOB, tfrecord:GLOB, tfds:NAME/SPLIT, folder:DIR." ;;
  esac
}

stage_selected() {
  [[ -z $STAGES || ",$STAGES," == *",$1,"* ]]
}

# add_stage NAME PROGRAM WORKDIR PAPER NEEDS CONFIG [OVERRIDE...]
#   PROGRAM  pretrain or finetune (runs python -m PROGRAM.main)
#   PAPER    the paper's top-1 for the results table ("" when none)
#   NEEDS    a workdir that must hold a finished run first ("" when none)
#   CONFIG   config file with its :args; OVERRIDEs are --config.x=y flags
# The user's --pretrain-arg / --finetune-arg / -- arguments come last, so
# they win over the recipe's.
add_stage() {
  local name=$1 program=$2 workdir=$3 paper=$4 needs=$5 config=$6
  shift 6
  KNOWN_STAGES+=("$name")
  stage_selected "$name" || return 0
  local args=(--config="$config" --workdir="$workdir" "$@")
  if [[ $program == pretrain ]]; then
    args+=(${PRETRAIN_EXTRA[@]+"${PRETRAIN_EXTRA[@]}"})
  else
    args+=(${FINETUNE_EXTRA[@]+"${FINETUNE_EXTRA[@]}"})
  fi
  args+=(${ALL_EXTRA[@]+"${ALL_EXTRA[@]}"})
  if ((DISTRIBUTED)); then
    args+=(--distributed)
  fi
  STAGE_NAMES+=("$name")
  STAGE_PROGRAMS+=("$program")
  STAGE_WORKDIRS+=("$workdir")
  STAGE_PAPERS+=("$paper")
  STAGE_NEEDS+=("$needs")
  STAGE_ARGS+=("$(printf '%q ' "${args[@]}")")
}

# The arguments of `python -m nfnet.plan` for every selected stage.
plan_arguments() {
  PLAN=()
  local i args
  for i in "${!STAGE_NAMES[@]}"; do
    eval "args=(${STAGE_ARGS[i]})"
    PLAN+=(--stage="${STAGE_NAMES[i]}" --program="${STAGE_PROGRAMS[i]}"
           --paper="${STAGE_PAPERS[i]}" "${args[@]}" --next)
  done
}

check_stage_selection() {
  local name known
  local IFS=,
  for name in $STAGES; do
    for known in "${KNOWN_STAGES[@]}"; do
      [[ $name == "$known" ]] && continue 2
    done
    die "--stages: unknown stage '$name'; this recipe has: ${KNOWN_STAGES[*]}."
  done
  ((${#STAGE_NAMES[@]})) || die "--stages selected no stage."
}

wait_for_results() {
  local name=$1 workdir=$2 waited=0 patience=$RESULTS_WAIT_S
  if [[ $HOST_ID == 0 ]] || { [[ -z $HOST_ID ]] && ((!DISTRIBUTED)); }; then
    patience=0  # process 0 writes results.json before it exits
  fi
  while [[ ! -f $workdir/$RESULTS_FILE ]]; do
    if ((waited >= patience)); then
      die "stage $name stopped before its last step ($workdir/$RESULTS_FILE" \
        "was not written, e.g. after a preemption signal). Re-run the same" \
        "command: it resumes from the last checkpoint."
    fi
    sleep 5
    waited=$((waited + 5))
  done
}

# Arguments as a shell would need them typed, quoting only where needed.
display_args() {
  local arg shown=()
  for arg in "$@"; do
    if [[ $arg =~ ^[-A-Za-z0-9_./:=+,@%]+$ ]]; then
      shown+=("$arg")
    else
      shown+=("${arg@Q}")
    fi
  done
  echo "${shown[*]}"
}

run_stage() {
  local i=$1
  local name=${STAGE_NAMES[i]} program=${STAGE_PROGRAMS[i]}
  local workdir=${STAGE_WORKDIRS[i]} needs=${STAGE_NEEDS[i]}
  local args rc=0
  eval "args=(${STAGE_ARGS[i]})"
  echo "==> [$name] $PYTHON -m $program.main $(display_args "${args[@]}")"
  if [[ -f $workdir/$RESULTS_FILE ]]; then
    echo "    finished earlier ($workdir/$RESULTS_FILE): skipped."
    return 0
  fi
  if [[ -n $needs && ! -f $needs/$RESULTS_FILE ]]; then
    die "stage $name starts from $needs, which holds no finished run" \
      "($needs/$RESULTS_FILE is missing): run that stage first."
  fi
  "$PYTHON" -m "$program.main" "${args[@]}" || rc=$?
  if ((rc != 0)); then
    echo "error: stage $name failed (exit $rc). Fix the cause above and re-run" \
      "the same command: finished stages are skipped and this one resumes" \
      "from its last checkpoint in $workdir." >&2
    exit "$rc"
  fi
  wait_for_results "$name" "$workdir"
}

run_stages() {
  check_stage_selection
  plan_arguments
  if ((DRY_RUN)); then
    "$PYTHON" -m nfnet.plan "${PLAN[@]}"
    return
  fi
  # Resolve every stage before the first one runs, so that a typo in a
  # fine-tune override fails now rather than after pre-training.
  JAX_PLATFORMS=cpu "$PYTHON" -m nfnet.plan "${PLAN[@]}" >/dev/null
  local i
  for i in "${!STAGE_NAMES[@]}"; do
    run_stage "$i"
  done
  if is_first_host; then
    echo
    JAX_PLATFORMS=cpu "$PYTHON" -m nfnet.plan --results "${PLAN[@]}"
  fi
}

# ----------------------------------------------------------------------------
# Pre-training data and ImageNet: the inputs of the transfer recipes
# (jft_f4plus.sh, nf_resnet50.sh, imagenet21k_to_imagenet.sh).
# ----------------------------------------------------------------------------

PRETRAIN_DATA=${PRETRAIN_DATA:-}
PRETRAIN_EVAL=${PRETRAIN_EVAL:-}
IMAGENET_DIR=${IMAGENET_DIR:-${TFDS_DATA_DIR:-}}
IMAGENET_TRAIN=${IMAGENET_TRAIN:-}
IMAGENET_EVAL=${IMAGENET_EVAL:-}

transfer_option() {
  case $1 in
    --pretrain-data|--pretrain-data=*) opt_value "$@"; PRETRAIN_DATA=$VALUE ;;
    --pretrain-eval|--pretrain-eval=*) opt_value "$@"; PRETRAIN_EVAL=$VALUE ;;
    --imagenet|--imagenet=*) opt_value "$@"; IMAGENET_DIR=$VALUE ;;
    --imagenet-train|--imagenet-train=*) opt_value "$@"; IMAGENET_TRAIN=$VALUE ;;
    --imagenet-eval|--imagenet-eval=*) opt_value "$@"; IMAGENET_EVAL=$VALUE ;;
  esac
}

# Sets PRETRAIN_DATA_ARGS and IMAGENET_ARGS (--config.data.* overrides; empty
# when the option is not given, so a dry run shows the config's defaults) and,
# in a real run, checks every input the selected stages read.
transfer_data() {
  PRETRAIN_DATA_ARGS=()
  IMAGENET_ARGS=()
  local train eval_source
  if [[ -n $PRETRAIN_DATA ]]; then
    train=$(shards_source "$PRETRAIN_DATA" train)
    if [[ $PRETRAIN_EVAL == none ]]; then
      eval_source=""
    elif [[ -n $PRETRAIN_EVAL ]]; then
      eval_source=$(shards_source "$PRETRAIN_EVAL" eval)
    elif [[ $train == "arrayrecord:$(absolute_path "$PRETRAIN_DATA")/"* ]]; then
      eval_source=$(shards_source "$PRETRAIN_DATA" eval)
    else
      eval_source=""
      note "no --pretrain-eval: pre-training runs without a held-out evaluation."
    fi
    PRETRAIN_DATA_ARGS=(--config.data.train="$train" --config.data.eval="$eval_source")
  fi
  if [[ -n $IMAGENET_TRAIN || -n $IMAGENET_EVAL ]]; then
    [[ -n $IMAGENET_TRAIN && -n $IMAGENET_EVAL ]] || die "give both" \
      "--imagenet-train and --imagenet-eval (or --imagenet TFDS_DIR)."
    IMAGENET_ARGS=(--config.data.train="$(folder_source "$IMAGENET_TRAIN")"
                   --config.data.eval="$(folder_source "$IMAGENET_EVAL")")
  elif [[ -n $IMAGENET_DIR ]]; then
    # The fine-tune configs read tfds:imagenet2012/...; TFDS finds it here.
    export TFDS_DATA_DIR
    TFDS_DATA_DIR=$(absolute_path "$IMAGENET_DIR")
  fi
  if ((DRY_RUN)); then
    return 0
  fi
  if stage_selected pretrain; then
    [[ -n $PRETRAIN_DATA ]] || die "pre-training data missing: pass" \
      "--pretrain-data DIR|SOURCE (or set PRETRAIN_DATA); see --help."
    check_source "--pretrain-data" "${PRETRAIN_DATA_ARGS[0]#*=}"
    if [[ -n ${PRETRAIN_DATA_ARGS[1]#*=} ]]; then
      check_source "--pretrain-eval" "${PRETRAIN_DATA_ARGS[1]#*=}"
    fi
  fi
  if any_finetune_selected; then
    if ((${#IMAGENET_ARGS[@]})); then
      check_source "--imagenet-train" "${IMAGENET_ARGS[0]#*=}"
      check_source "--imagenet-eval" "${IMAGENET_ARGS[1]#*=}"
    else
      [[ -n $IMAGENET_DIR ]] || die "ImageNet location missing: pass --imagenet" \
        "TFDS_DATA_DIR (holding imagenet2012 prepared as array_record; or set" \
        "IMAGENET_DIR), or --imagenet-train/--imagenet-eval SOURCE; see --help."
      check_source "--imagenet" "tfds:imagenet2012/train"
    fi
  fi
}

any_finetune_selected() {
  [[ -z $STAGES || ",$STAGES," == *,finetune_* ]]
}
