#!/usr/bin/env bash
# Stage 3 (PPO), single_gpu deployment. Settings: see scripts/launch.sh; extra flags go to the stage.
source "$(dirname "$0")/../launch.sh"
launch_stage single_gpu 3 "$@"
