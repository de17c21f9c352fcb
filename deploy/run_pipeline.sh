#!/usr/bin/env bash
# The RayJob's entrypoint (deploy/rayjob.yaml): bring the project copy on the shared volume to the image's
# commit, then run the pipeline there (every pod mounts the volume, so every stage's relative paths are shared).
#
#   bash deploy/run_pipeline.sh [command ...]        # default: dvc repro
#
# The first run clones the image's checkout; later runs (a newer image) move the copy to the image's commit.
# Tracked files follow the image (a dvc.lock rewritten by an earlier run is replaced by the committed one);
# data, models, reports and the DVC cache are ignored by git and stay, and DVC's run cache restores any output
# whose stage already ran with the same inputs, so nothing computed is lost.
set -euo pipefail
image_checkout=${STYLECORE_IMAGE_CHECKOUT:-/opt/stylecore}
shared_project=${STYLECORE_SHARED_PROJECT:-/mnt/shared/stylecore}

if [ ! -d "$shared_project/.git" ]; then
    echo "run_pipeline: cloning $image_checkout into $shared_project"
    git clone --quiet "$image_checkout" "$shared_project"
fi
cd "$shared_project"
git fetch --quiet "$image_checkout" HEAD
if [ "$(git rev-parse HEAD)" != "$(git rev-parse FETCH_HEAD)" ]; then
    echo "run_pipeline: moving $shared_project from $(git rev-parse --short HEAD) to $(git rev-parse --short FETCH_HEAD)"
fi
git -c advice.detachedHead=false checkout --quiet --force --detach FETCH_HEAD
if [ "$#" -eq 0 ]; then
    set -- dvc repro
fi
echo "run_pipeline: $* in $shared_project at $(git rev-parse --short HEAD)"
exec "$@"
