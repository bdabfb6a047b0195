"""Model selection without target labels: the scores, the rules, and where they are logged.

In unsupervised domain adaptation there are no target labels to choose a checkpoint or a
hyper-parameter with. At every evaluation during training (``trainer.val_check_interval``)
:class:`SelectionProbe` computes, on the **source validation split** held out from source
training (``data.src_val``) and on a fixed sample of the **unlabelled target training data**,
the signals each rule needs, and appends one line per evaluation to the run's
``evaluations.jsonl``::

    step, tgt_acc, src_acc              accuracies (tgt_acc on every target test image: for the study and
                                        the oracle only; src_acc on a fixed sample of probe.src_test images)
    src_val_acc, src_val_loss           source validation split
    entropy, im, snd, bnm, mano         target predictions
    class_ami, mixval                   target features / mixed target images
    dev, devn, iwcv                     importance-weighted source validation
    rv                                  reverse validation

and the target sample's predictions to ``predictions/step=NNNNNN.npy`` (EnsV compares them across
checkpoints). One forward pass of each sample serves every validator (:class:`Views`).

A rule is a small function over those lines (:data:`RULES`: ``last``, ``last_k``, one per
validator of :mod:`dann.selection.validators`, ``ensv`` and ``oracle``), applied afterwards
without retraining: ``selection=RULE`` names the one a run reports as ``selected`` in its
record, ``dann-table --select RULE`` builds the table with it, ``dann-table --selection-study``
compares them all (:mod:`dann.report.study`). ``oracle`` (best target *test* accuracy) reads
target labels and is always labelled so. Each score is one function of
:mod:`dann.selection.scores`, with its formula and paper in its docstring; a validator of your
own is one function too, in a module named in ``validator_modules`` (README "Model selection").
"""

from dann.selection.evaluations import (ENSV, EVALS_FILE, append_evaluation, read_evaluations, read_predictions,
                                        record_evaluations, save_predictions, with_ensv)
from dann.selection.rules import (LEGACY, RULES, Pick, Rule, final_scores, oriented, refresh_rules, rule_of, select,
                                  selected_model)
from dann.selection.scores import (bnm_score, class_ami, density_ratio, dev_risk, devn_score, ensv_scores,
                                   entropy_score, im_score, iwcv_score, mano_score, mixval_score, reverse_validation,
                                   snd_score)
from dann.selection.validators import VALIDATORS, Views, accuracy, evaluate, evaluate_views, import_validators, validator

__all__ = ["ENSV", "EVALS_FILE", "append_evaluation", "read_evaluations", "read_predictions", "record_evaluations",
           "save_predictions", "with_ensv", "LEGACY", "RULES", "Pick", "Rule", "final_scores", "oriented",
           "refresh_rules", "rule_of", "select", "selected_model", "bnm_score", "class_ami", "density_ratio",
           "dev_risk", "devn_score", "ensv_scores", "entropy_score", "im_score", "iwcv_score", "mano_score",
           "mixval_score", "reverse_validation", "snd_score", "VALIDATORS", "Views", "accuracy", "evaluate",
           "evaluate_views", "import_validators", "validator"]
