"""The one package shared by all stages: config, data, models, DeepSpeed, logging."""
