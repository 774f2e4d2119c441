"""Training: the one GAN update (`step`, with the autoencoder's `forward`; the objective is
`losses.objective`) and the engines it runs on (`engines`), which network plays which role (`networks`),
the LightningModule around it (`module`), the checkpoint schema (`checkpoint`), configs, optimizers,
precision default, strategies (DDP, FSDP2) and sharding, the memory budget (`memory_search`: the pure plan
search; `memory_budget`: measuring the run's step and applying the plan) and the callbacks.

May import: errors, models, losses, data and evaluation (validation metrics); never export or the
command line. Nothing is imported here; `training.checkpoint` imports no Lightning module of its own, but
what it reads (the networks' roles, the data records) brings torch and diffusers.
"""
