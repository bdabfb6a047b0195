"""Self-ensembling (French et al., ICLR 2018: a mean teacher for domain adaptation, with confidence
thresholding and a class-balance loss):

``L = CE(s(a(x_s)), y_s) + w [ mean_t m_t (1/K) ||s(a(x_t)) - t(a'(x_t))||^2 + b mean(m) sum_k BCE(mean_t s_k(a(x_t)), 1/K) ]``,

where ``s`` is the student's and ``t`` the teacher's class probabilities, ``a`` and ``a'`` two
independent random augmentations (:func:`dann.methods.augment.augment`: small translations,
Gaussian noise, optionally affine warps), ``m_t = 1[max_k t_k(a'(x_t)) > confidence]`` the
confidence mask and ``BCE(p, q) = -(q log(p + 1e-6) + (1 - q) log(1 - p + 1e-6))`` (the authors' class-balance
loss, weighted by the share of confident examples, ``mean(m)``). The student is trained; after
each of its updates the teacher follows it, ``theta_t <- alpha theta_t + (1 - alpha) theta_s``
(:func:`dann.methods.teacher.ema_update`). The teacher is the model evaluated and scored:
``features`` and ``classifier`` hold it, the student is ``student``. Target labels are never read.

Deviations, for a comparison of methods on one network and recipe: the authors' digit networks
(with batch norm), Adam (lr 1e-3) and batches of 128-256 per domain; here the pair's network,
the shared SGD schedule and batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dann.errors import ConfigError
from dann.methods.augment import augment
from dann.methods.base import DAMethod
from dann.methods.teacher import Network, copy_of, ema_update


def robust_bce(p: torch.Tensor, q: float | torch.Tensor) -> torch.Tensor:
    """``-(q log(p + 1e-6) + (1 - q) log(1 - p + 1e-6))``, element-wise."""
    return -(q * torch.log(p + 1e-6) + (1 - q) * torch.log(1 - p + 1e-6))


def consistency(student: torch.Tensor, teacher: torch.Tensor, confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean_i m_i (1/K) ||student_i - teacher_i||^2`` and the mask ``m`` (probabilities in)."""
    mask = (teacher.max(1).values > confidence).to(student.dtype)
    return (((student - teacher) ** 2).mean(1) * mask).mean(), mask


def class_balance(student: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean(m) sum_k BCE(mean_i student_ik, 1/K)``."""
    k = student.shape[1]
    return robust_bce(student.mean(0), 1.0 / k).sum() * mask.mean()


class SelfEnsembling(DAMethod):
    """Args (beyond :class:`DAMethod`'s):
        teacher_decay: ``alpha``, the teacher's EMA decay.
        consistency_weight: ``w``, the weight of the unsupervised terms.
        confidence: the teacher's confidence threshold.
        class_balance_weight: ``b``.
        max_shift, affine_std, noise_std: the augmentation's (pixels, affine-part std, noise std).
    """

    def __init__(self, *args: Any, teacher_decay: float = 0.99, consistency_weight: float = 3.0,
                 confidence: float = 0.96837722, class_balance_weight: float = 0.005, max_shift: float = 2.0,
                 affine_std: float = 0.0, noise_std: float = 0.1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # the student is the pair's network; `features`/`classifier` become the teacher, a copy
        # of it at the start (the model every evaluation and score reads)
        self.student = Network(self._nets.features, self._nets.classifier)
        self.features = copy_of(self._nets.features)
        self.classifier = copy_of(self._nets.classifier)

    @classmethod
    def check_options(cls, teacher_decay: float, consistency_weight: float, confidence: float,
                      class_balance_weight: float, max_shift: float, affine_std: float, noise_std: float,
                      **_: Any) -> None:
        if not 0 <= teacher_decay < 1:
            raise ConfigError(f"method.teacher_decay={teacher_decay!r} is invalid: expected a value in [0, 1) "
                              f"(the paper: 0.99)")
        if not 0 <= confidence < 1:
            raise ConfigError(f"method.confidence={confidence!r} is invalid: expected a probability in [0, 1)")
        for k, v in (("consistency_weight", consistency_weight), ("class_balance_weight", class_balance_weight),
                     ("max_shift", max_shift), ("affine_std", affine_std), ("noise_std", noise_std)):
            if v < 0:
                raise ConfigError(f"method.{k}={v!r} is invalid: expected a value >= 0")

    def teacher(self) -> Network:
        return Network(self.features, self.classifier)

    def aug(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hparams
        return augment(x, h.max_shift, h.affine_std, h.noise_std)

    def losses(self, batch):
        h = self.hparams
        xs, xt = batch["src_x"], batch["tgt_x"]
        ns = len(xs)
        logits = self.student(torch.cat([self.aug(xs), self.aug(xt)]))
        with torch.no_grad():
            p_teacher = torch.softmax(self.teacher()(self.aug(xt)), 1)
        p_student = torch.softmax(logits[ns:], 1)
        cons, mask = consistency(p_student, p_teacher, h.confidence)
        self._mask = mask.detach()
        w = h.consistency_weight
        return {"cls": F.cross_entropy(logits[:ns], batch["src_y"]), "cons": w * cons,
                "bal": w * h.class_balance_weight * class_balance(p_student, mask)}

    def logs(self):
        return {"confident": self._mask.mean()}

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # inside the training step, so every checkpoint written after it holds the updated teacher
        super().optimizer_step(*args, **kwargs)
        ema_update(self.teacher(), self.student, self.hparams.teacher_decay)
