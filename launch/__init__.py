"""The launcher's parts: the plan of a run's stages and the closing report."""
