"""Training: the one GAN update (`step`, with the autoencoder's `forward`; the objective is
`losses.objective`) and the engines it runs on (`engines`), which network plays which role (`networks`),
the LightningModule around it (`module`), what its checkpoints record of it (`checkpoint`; the schema
itself is `vaetrain.checkpoints`), configs, optimizers, precision default, strategies (DDP, FSDP2) and
sharding, the memory budget (`memory_search`: the pure plan search; `memory_budget`: measuring the run's
step and applying the plan) and the callbacks.

May import: errors, frames, models, losses, data, checkpoints (the schema) and evaluation (validation
metrics); never export or the command line. Nothing is imported here.
"""
