#!/usr/bin/env bash
# Stage 3 (PPO), multi_node deployment. Settings: see scripts/launch.sh; extra flags go to the stage.
source "$(dirname "$0")/../launch.sh"
launch_stage multi_node 3 "$@"
