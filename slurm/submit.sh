#!/usr/bin/env bash
# The study on a SLURM cluster, in three jobs, results gathered through a DVC remote:
#   prepare  this workspace: validate, download, prepare, recipes (once); push to the remote
#   train    a job array: each task checks out this commit in its own folder, trains its slice
#            of the runs over its node's GPUs (python -m augvit.fanout), pushing each training
#            and its run-cache entry to the remote as soon as it finishes (and, on any exit,
#            what is finished); the data comes linked from one shared DVC cache
#   gather   this workspace: `dvc repro --pull` restores every training from the remote's
#            run-cache (it trains nothing: it stops if one is missing), then evaluates,
#            compares and plots once; pushes. The study is then here, as if run here.
# Run on a login node, from the project: bash slurm/submit.sh
# The project folder (with its .venv) must be on a filesystem the compute nodes see.
set -euo pipefail

# ---------------------------------------------------------------- edit these three
PARTITION="${PARTITION-}"   # e.g. gpu (sinfo lists them); empty: the cluster's default
ACCOUNT="${ACCOUNT-}"       # e.g. my-lab; empty: your default account
REMOTE="${REMOTE-}"         # a DVC remote every node reaches (s3://..., /shared/path, ...);
                            # empty: the project's default remote (dvc remote default).
                            # Credentials: never here; dvc remote modify --local (see
                            # docs/scale-out.md); the jobs read them from .dvc/config.local
# ---------------------------------------------------------------- optional, from the environment
TASKS="${TASKS:-4}"                 # array tasks: the runs are split into this many slices
GPUS_PER_TASK="${GPUS_PER_TASK:-1}" # GPUs per array task (0: train on CPUs)
CPUS_PER_TASK="${CPUS_PER_TASK:-8}" # CPU cores per task
FANOUT="${FANOUT:---per-gpu 1}"     # how a task shares its node: python -m augvit.fanout's
                                    # options, e.g. --per-gpu 3, or --cpu-slots 8 --threads 1
TIME="${TIME:-1-00:00:00}"          # time limit of each job
SIGNAL_LEAD="${SIGNAL_LEAD:-300}"   # seconds before a task's time limit when SLURM tells it to
                                    # stop (SIGTERM): it stops its trainings and pushes
CACHE_DIR="${CACHE_DIR-}"           # the DVC cache every task shares (on a filesystem the nodes
                                    # share); empty: this project's cache (dvc cache dir);
                                    # none: each task its own cache, data pulled per task
CACHE_TYPE="${CACHE_TYPE:-hardlink,symlink,copy}"   # how tasks link data from that cache
VENV="${VENV:-}"                    # the Python environment; empty: the project's .venv
SCRATCH="${SCRATCH_DIR:-}"          # where the tasks' checkouts go; empty: .dvc/tmp/slurm/

PROJECT="$(git rev-parse --show-toplevel)"
for n in TASKS GPUS_PER_TASK CPUS_PER_TASK SIGNAL_LEAD; do
    if ! [[ "${!n}" =~ ^[0-9]+$ ]]; then
        echo "submit: $n must be a whole number, got '${!n}'" >&2
        exit 1
    fi
done
cd "$PROJECT"
VENV="${VENV:-$PROJECT/.venv}"
# shellcheck disable=SC1091
. "$VENV/bin/activate"

python -m augvit.cluster check         # the tasks check out HEAD: the inputs must be committed
if [ -n "$REMOTE" ]; then
    dvc remote add --local --force --default slurm "$REMOTE"
    echo "submit: DVC remote 'slurm' is now this project's default (.dvc/config.local)"
fi
name="$(dvc remote default 2>/dev/null || true)"
if [ -z "$name" ] || ! dvc config "remote.$name.url" >/dev/null 2>&1; then
    echo "submit: no DVC remote: set REMOTE in slurm/submit.sh (or dvc remote add -d)" >&2
    exit 1
fi
case "$CACHE_DIR" in
    none) cache="" ;;
    "") cache="$(dvc cache dir)" ;;
    *) cache="$CACHE_DIR" ;;
esac

logs="$PROJECT/.dvc/tmp/slurm/logs"
mkdir -p "$logs"
# paths and names only: the remote's URL and credentials stay in DVC's config files
export AUGVIT_PROJECT="$PROJECT" AUGVIT_COMMIT="$(git rev-parse HEAD)" AUGVIT_REMOTE_NAME="$name"
export AUGVIT_VENV="$VENV" AUGVIT_TASKS="$TASKS" AUGVIT_FANOUT="$FANOUT"
export AUGVIT_SCRATCH="${SCRATCH:-$PROJECT/.dvc/tmp/slurm}"
export AUGVIT_CACHE="$cache" AUGVIT_CACHE_TYPE="$CACHE_TYPE"

common=(--parsable --export=ALL --chdir="$PROJECT" --time="$TIME" --kill-on-invalid-dep=yes)
[ -n "$PARTITION" ] && common+=(--partition="$PARTITION")
[ -n "$ACCOUNT" ] && common+=(--account="$ACCOUNT")
gpus=()
[ "$GPUS_PER_TASK" -gt 0 ] && gpus=(--gres="gpu:$GPUS_PER_TASK")

submit() { local id; id="$(sbatch "$@")"; echo "${id%%;*}"; }
prepare="$(submit "${common[@]}" --job-name=augvit-prepare --cpus-per-task="$CPUS_PER_TASK" \
    --output="$logs/%x-%j.out" slurm/prepare.sbatch)"
train="$(submit "${common[@]}" --job-name=augvit-train --array="0-$((TASKS - 1))" --requeue \
    --signal="B:TERM@$SIGNAL_LEAD" \
    --cpus-per-task="$CPUS_PER_TASK" "${gpus[@]}" --dependency="afterok:$prepare" \
    --output="$logs/%x-%A_%a.out" slurm/train.sbatch)"
gather="$(submit "${common[@]}" --job-name=augvit-gather --cpus-per-task="$CPUS_PER_TASK" \
    "${gpus[@]}" --dependency="afterok:$train" --output="$logs/%x-%j.out" slurm/gather.sbatch)"

echo "prepare=$prepare train=$train gather=$gather"
echo "submit: logs in $logs; when gather is done: dvc status, git status, reports/comparison.md"
