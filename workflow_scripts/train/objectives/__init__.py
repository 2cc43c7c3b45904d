"""Training objectives: what a model is trained on (see :mod:`.base` for the interface the loop uses).

* :mod:`.gan`: the GAN pair (noise-to-image DCGAN; conditional SR-GAN / pix2pix with optional L1 and an
  ambient-noise ``observe``);
* :mod:`.ragan`: the relativistic-average standard GAN with PacGAN-2 packing (Smith & Geach 2019's Spatial-GAN:
  noise fields in, a packed discriminator; ``ragan_losses``);
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
from workflow_scripts.train.objectives.ragan import RelativisticPackedGAN, ragan_losses

__all__ = ["AsinhNoise", "ConditionalGAN", "ConditionalTask", "GANObjective", "GANTask", "LikelihoodObjective",
           "LogProb", "NoiseToImageGAN", "NoiseToImageTask", "Objective", "RelativisticPackedGAN", "StepContext",
           "module_fingerprint", "ragan_losses"]
