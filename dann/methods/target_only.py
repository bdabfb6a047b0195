"""Train-on-target upper bound: ``L = CE(G_y(G_f(x_t)), y_t)`` with the target's labels.

It reads labels the unsupervised methods never see; its numbers bound what adaptation
could reach with the same network and schedule.
"""

import torch.nn.functional as F

from dann.methods.base import DAMethod


class TargetOnly(DAMethod):
    uses_target_labels = True

    def losses(self, batch):
        return {"cls": F.cross_entropy(self(batch["tgt_x"]), batch["tgt_y"])}
