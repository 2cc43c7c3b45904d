"""Training objectives: what a model is trained on (see :mod:`.base` for the interface the loop uses).

* :mod:`.gan`: the GAN pair (noise-to-image DCGAN; conditional SR-GAN / pix2pix with optional L1 and an
  ambient-noise ``observe``);
* :mod:`.likelihood`: one density model trained by maximum likelihood (NLL in nats, bits/dim reported).
"""

from workflow_scripts.train.objectives.base import (
                                                   Objective,
                                                   StepContext,
                                                   module_fingerprint,
)
from workflow_scripts.train.objectives.gan import (
                                                   AsinhNoise,
                                                   ConditionalGAN,
                                                   ConditionalTask,
                                                   GANObjective,
                                                   GANTask,
                                                   NoiseToImageGAN,
                                                   NoiseToImageTask,
)
from workflow_scripts.train.objectives.likelihood import LikelihoodObjective, LogProb

__all__ = ["AsinhNoise", "ConditionalGAN", "ConditionalTask", "GANObjective", "GANTask", "LikelihoodObjective",
           "LogProb", "NoiseToImageGAN", "NoiseToImageTask", "Objective", "StepContext", "module_fingerprint"]
