"""assist: the live call runtime, the agent's sidebar and the `callwise` command line."""
