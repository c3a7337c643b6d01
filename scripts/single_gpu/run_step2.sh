#!/usr/bin/env bash
# Stage 2 (reward model), single_gpu deployment. Settings: see scripts/launch.sh; extra flags go to the stage.
source "$(dirname "$0")/../launch.sh"
launch_stage single_gpu 2 "$@"
