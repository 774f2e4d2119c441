"""Training: the one GAN step (`step.GanStep`) and the engines it runs on (`engines`), the LightningModule
around it (`module`), the checkpoint schema (`checkpoint`), configs, optimizers, precision default,
strategies (DDP, FSDP2) and sharding, the memory budget (`memory_plan`, `memory_budget`) and the
reconstruction-grid callback.

May import: errors, models, losses, data and evaluation (validation metrics); never export or the
command line. Nothing is imported here, so `import vaetrain.training.checkpoint` stays light.
"""
