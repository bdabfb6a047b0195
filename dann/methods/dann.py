"""DANN (Ganin et al., JMLR 2016, eq. 18 / Algorithm 1):

``L = CE(G_y(G_f(x_s)), y_s) + BCE(G_d(R_lambda(G_f(x))), d)``, ``x`` = source and target,

where ``R_lambda`` is the gradient-reversal layer. The domain classifier ``G_d`` learns
at full strength; ``lambda_p`` (annealed from 0 to 1) scales only the reversed gradient
that reaches the feature extractor. Target labels are never read.
"""

import torch
import torch.nn.functional as F

from dann.grl import grad_reverse
from dann.methods.base import DAMethod


class DANN(DAMethod):
    uses_discriminator = True

    def losses(self, batch):
        xs, xt = batch["src_x"], batch["tgt_x"]
        ns = len(xs)
        f = self.features(torch.cat([xs, xt]))  # one pass: no batch norm, so no cross-talk
        cls = F.cross_entropy(self.classifier(f[:ns]), batch["src_y"])
        d = self.discriminator(grad_reverse(f, self.lambda_p)).squeeze(1)
        dom_y = torch.cat([d.new_zeros(ns), d.new_ones(len(xt))])  # 0 = source, 1 = target
        self._dom = (d.detach(), dom_y)  # for the learning curves (read on logging steps only)
        return {"cls": cls, "dom": F.binary_cross_entropy_with_logits(d, dom_y)}

    def extra_train_logs(self, batch):
        d, y = self._dom
        return {"train/dom_acc": ((d > 0).float() == y).float().mean()}
