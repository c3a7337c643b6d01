#!/usr/bin/env bash
# Stage 2 (reward model), multi_node deployment. Settings: see scripts/launch.sh; extra flags go to the stage.
source "$(dirname "$0")/../launch.sh"
launch_stage multi_node 2 "$@"
