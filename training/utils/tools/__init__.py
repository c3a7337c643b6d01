"""Tools and environments for multi-turn rollouts: tools are plain Python functions (their JSON schema
from type hints and docstring), calls are parsed from the model's text by a named parser, run by an
executor that turns every failure into a ``tool`` message, and an environment (``reset`` / ``step``)
drives the conversation; the tool loop is one environment."""
