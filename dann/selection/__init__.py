"""Model selection without target labels: the scores, the rules, and where they are logged.

In unsupervised domain adaptation there are no target labels to choose a checkpoint or a
hyper-parameter with. At every evaluation during training (``trainer.val_check_interval``)
:class:`SelectionProbe` computes, on the **source validation split** held out from source
training (``data.src_val``) and on a fixed sample of the **unlabelled target training data**,
the signals each rule needs, and appends one line per evaluation to the run's
``evaluations.jsonl``::

    step, tgt_acc, src_acc              accuracies on the test sets (tgt_acc: for the study and oracle only)
    src_val_acc, src_val_loss           source validation split
    entropy, im, snd                    target predictions (lower entropy, higher IM / SND is better)
    dev                                 Deep Embedded Validation risk (lower is better)
    rv                                  reverse-validation accuracy (higher is better)

A rule is a small function over those lines (:data:`RULES`, one per validator of :mod:`dann.selection.validators`), applied afterwards without
retraining: ``selection=RULE`` names the one a run reports as ``selected`` in its record,
``dann-table --select RULE`` builds the table with it, ``dann-table --selection-study``
compares them all. ``oracle`` (best target *test* accuracy) reads target labels and is
always labelled so.

Scores (``N`` samples each side, default 2000; features = the feature extractor's output):

* ``entropy``: mean entropy of the target predictions.
* ``im``: information maximisation, ``H(mean p) - mean H(p)`` on target predictions.
* ``snd``: soft neighbourhood density (Saito et al., ICCV 2021): entropy of the softmax
  (temperature 0.05) of each target prediction's cosine similarities to the others.
* ``dev``: Deep Embedded Validation (You et al., ICML 2019): a logistic domain classifier on
  source-train vs target features gives density ratios ``w = (Ns/Nt) p(t|x) / p(s|x)`` on the
  source validation split; the risk is the mean of ``w * loss`` corrected by the control
  variate ``eta = -Cov(w loss, w) / Var(w)``: ``mean(w loss) + eta mean(w) - eta``.
* ``rv``: reverse validation (Zhong et al., 2010, used by Ganin et al. for hyper-parameters):
  the model labels the target sample; a *reverse* classifier trained on the pseudo-labelled
  target (multinomial logistic regression on the model's features, a cheap stand-in for
  retraining the whole network in the reverse direction) is scored on the source validation
  split.
"""

from dann.selection.evaluations import EVALS_FILE, append_evaluation, read_evaluations, record_evaluations
from dann.selection.rules import LEGACY, RULES, Pick, Rule, final_scores, oriented, rule_of, select, selected_model
from dann.selection.validators import (VALIDATORS, Views, accuracy, density_ratio, dev_risk, entropy_score, evaluate,
                                       im_score, reverse_validation, snd_score, validator)

__all__ = ["EVALS_FILE", "append_evaluation", "read_evaluations", "record_evaluations", "LEGACY", "RULES", "Pick",
           "Rule", "final_scores", "oriented", "rule_of", "select", "selected_model", "VALIDATORS", "Views", "accuracy", "density_ratio",
           "dev_risk", "entropy_score", "evaluate", "im_score", "reverse_validation", "snd_score", "validator"]
