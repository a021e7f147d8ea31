# Sourced by the job scripts: the project's Python environment, strict errors, and a DVC
# remote for a checkout (submit.sh exports the AUGVIT_* settings).
set -euo pipefail
# shellcheck disable=SC1091
. "$AUGVIT_VENV/bin/activate"
export DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1

use_remote() {  # in a task's checkout: the study's remote as its default (its own config)
    dvc remote add --local --force --default slurm "$AUGVIT_REMOTE"
}

at_submitted_commit() {  # the project's workspace must still hold the submitted study
    local head; head="$(git -C "$AUGVIT_PROJECT" rev-parse HEAD)"
    if [ "$head" != "$AUGVIT_COMMIT" ]; then
        echo "$SLURM_JOB_NAME: the project is at $head, but the study was submitted at" \
             "$AUGVIT_COMMIT: check that commit out again (git checkout) and resubmit." >&2
        exit 1
    fi
    (cd "$AUGVIT_PROJECT" && python -m augvit.cluster check)
}

log() { echo "[$(date '+%F %T')] $SLURM_JOB_NAME $*"; }
