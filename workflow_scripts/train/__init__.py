"""The shared training layer: one loop for every model, objectives that say what is trained, checkpoints,
pre-emption signals, data-parallel runs, the job launcher of training rules, and inference.

    from workflow_scripts.train import ConditionalGAN, TrainConfig, train
    result = train(ConditionalGAN(generator, discriminator), (lowres, hires), TrainConfig(epochs=10), out_dir)

Modules: :mod:`.loop` (``train``, ``TrainConfig``), :mod:`.objectives` (``GANObjective`` and its noise-to-image and
conditional forms, ``LikelihoodObjective``; the ``Objective`` interface), :mod:`.checkpoint`, :mod:`.signals`,
:mod:`.distributed`, :mod:`.launch` (in-process or torchrun, exit status 75 after pre-emption) and
:mod:`.inference` (``load_model``, ``generate``).
"""

from workflow_scripts.train.checkpoint import CHECKPOINT_NAME, CHECKPOINT_VERSION
from workflow_scripts.train.inference import (
                                              generate,
                                              load_generator,
                                              load_model,
                                              noise,
                                              resolve_device,
                                              save_generator,
                                              save_model,
)
from workflow_scripts.train.loop import (
                                              GENERATOR_NAME,
                                              LOSSES_CSV,
                                              LOSSES_PNG,
                                              LR_SCHEDULES,
                                              StepInfo,
                                              TrainConfig,
                                              TrainResult,
                                              as_dataset,
                                              csv_columns,
                                              epoch_batches,
                                              lr_factor,
                                              train,
                                              weight_average,
                                              write_losses,
)
from workflow_scripts.train.objectives import (
                                              AsinhNoise,
                                              ConditionalGAN,
                                              ConditionalTask,
                                              GANObjective,
                                              GANTask,
                                              LikelihoodObjective,
                                              NoiseToImageGAN,
                                              NoiseToImageTask,
                                              Objective,
                                              StepContext,
)
from workflow_scripts.train.signals import PREEMPTED_EXIT_CODE, Preempted

__all__ = [
                                              "CHECKPOINT_NAME",
                                              "CHECKPOINT_VERSION",
                                              "GENERATOR_NAME",
                                              "LOSSES_CSV",
                                              "LOSSES_PNG",
                                              "LR_SCHEDULES",
                                              "PREEMPTED_EXIT_CODE",
                                              "AsinhNoise",
                                              "ConditionalGAN",
                                              "ConditionalTask",
                                              "GANObjective",
                                              "GANTask",
                                              "LikelihoodObjective",
                                              "NoiseToImageGAN",
                                              "NoiseToImageTask",
                                              "Objective",
                                              "Preempted",
                                              "StepContext",
                                              "StepInfo",
                                              "TrainConfig",
                                              "TrainResult",
                                              "as_dataset",
                                              "csv_columns",
                                              "epoch_batches",
                                              "generate",
                                              "load_generator",
                                              "load_model",
                                              "lr_factor",
                                              "noise",
                                              "resolve_device",
                                              "save_generator",
                                              "save_model",
                                              "train",
                                              "weight_average",
                                              "write_losses",
]
