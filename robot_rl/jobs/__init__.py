"""The jobs the CLI runs: collect, pretrain, eval, demo. Each takes a typed job config."""
