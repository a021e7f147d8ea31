# Sourced by the job scripts: the project's Python environment, strict errors, and a task
# checkout's DVC set-up (submit.sh exports the AUGVIT_* settings: paths and names only, never
# a remote's URL or credentials).
set -euo pipefail
# shellcheck disable=SC1091
. "$AUGVIT_VENV/bin/activate"
export DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1

use_project_dvc() {  # in a task's checkout: the project's remotes, default remote and cache
    # .dvc/config.local holds what `dvc remote add/modify --local` wrote in the project (URLs,
    # credentials): copied as a file readable by its owner only, never through the environment
    if [ -f "$AUGVIT_PROJECT/.dvc/config.local" ]; then
        install -m 600 "$AUGVIT_PROJECT/.dvc/config.local" .dvc/config.local
    fi
    dvc remote default --local "$AUGVIT_REMOTE_NAME"
    if [ -n "$AUGVIT_CACHE" ]; then   # one cache for every task: data linked, not copied
        dvc cache dir --local "$AUGVIT_CACHE"
        dvc config --local cache.type "$AUGVIT_CACHE_TYPE"
        dvc config --local cache.shared group
    fi
}

own_bytes() {  # bytes of the files here that are this checkout's own copies (not links),
    # leaving out git's and DVC's own state (.git, .dvc/tmp)
    find . \( -path ./.git -o -path ./.dvc/tmp \) -prune -o -type f -links 1 -printf '%s\n' |
        awk '{ s += $1 } END { print s + 0 }'
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
