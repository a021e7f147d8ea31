#!/usr/bin/env bash
# The study on a SLURM cluster, in three jobs, results gathered through a DVC remote:
#   prepare  this workspace: validate, download, prepare, recipes (once); push to the remote
#   train    a job array: each task checks out this commit in its own folder, trains its slice
#            of the runs over its node's GPUs (python -m augvit.fanout), pushes its results
#            and their run-cache entries to the remote
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
                            # empty: the project's default remote (dvc remote default)
# ---------------------------------------------------------------- optional, from the environment
TASKS="${TASKS:-4}"                 # array tasks: the runs are split into this many slices
GPUS_PER_TASK="${GPUS_PER_TASK:-1}" # GPUs per array task (0: train on CPUs)
CPUS_PER_TASK="${CPUS_PER_TASK:-8}" # CPU cores per task
FANOUT="${FANOUT:---per-gpu 1}"     # how a task shares its node: python -m augvit.fanout's
                                    # options, e.g. --per-gpu 3, or --cpu-slots 8 --threads 1
TIME="${TIME:-1-00:00:00}"          # time limit of each job
VENV="${VENV:-}"                    # the Python environment; empty: the project's .venv
SCRATCH="${SCRATCH_DIR:-}"          # where the tasks' checkouts go; empty: .dvc/tmp/slurm/

PROJECT="$(git rev-parse --show-toplevel)"
cd "$PROJECT"
VENV="${VENV:-$PROJECT/.venv}"
# shellcheck disable=SC1091
. "$VENV/bin/activate"

python -m augvit.cluster check         # the tasks check out HEAD: the inputs must be committed
if [ -n "$REMOTE" ]; then
    dvc remote add --local --force --default slurm "$REMOTE"
    echo "submit: DVC remote 'slurm' ($REMOTE) is now this project's default (.dvc/config.local)"
fi
name="$(dvc remote default 2>/dev/null || true)"
url="$(dvc remote list | awk -v n="$name" '$1 == n { print $2 }')"
if [ -z "$url" ]; then
    echo "submit: no DVC remote: set REMOTE in slurm/submit.sh (or dvc remote add -d)" >&2
    exit 1
fi

logs="$PROJECT/.dvc/tmp/slurm/logs"
mkdir -p "$logs"
export AUGVIT_PROJECT="$PROJECT" AUGVIT_COMMIT="$(git rev-parse HEAD)" AUGVIT_REMOTE="$url"
export AUGVIT_VENV="$VENV" AUGVIT_TASKS="$TASKS" AUGVIT_FANOUT="$FANOUT"
export AUGVIT_SCRATCH="${SCRATCH:-$PROJECT/.dvc/tmp/slurm}"

common=(--parsable --export=ALL --chdir="$PROJECT" --time="$TIME" --kill-on-invalid-dep=yes)
[ -n "$PARTITION" ] && common+=(--partition="$PARTITION")
[ -n "$ACCOUNT" ] && common+=(--account="$ACCOUNT")
gpus=()
[ "$GPUS_PER_TASK" -gt 0 ] && gpus=(--gres="gpu:$GPUS_PER_TASK")

submit() { local id; id="$(sbatch "$@")"; echo "${id%%;*}"; }
prepare="$(submit "${common[@]}" --job-name=augvit-prepare --cpus-per-task="$CPUS_PER_TASK" \
    --output="$logs/%x-%j.out" slurm/prepare.sbatch)"
train="$(submit "${common[@]}" --job-name=augvit-train --array="0-$((TASKS - 1))" --requeue \
    --cpus-per-task="$CPUS_PER_TASK" "${gpus[@]}" --dependency="afterok:$prepare" \
    --output="$logs/%x-%A_%a.out" slurm/train.sbatch)"
gather="$(submit "${common[@]}" --job-name=augvit-gather --cpus-per-task="$CPUS_PER_TASK" \
    "${gpus[@]}" --dependency="afterok:$train" --output="$logs/%x-%j.out" slurm/gather.sbatch)"

echo "prepare=$prepare train=$train gather=$gather"
echo "submit: logs in $logs; when gather is done: dvc status, git status, reports/comparison.md"
