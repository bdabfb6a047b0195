"""The training run: ``train(cfg)`` (:mod:`dann.run.train`), the builder that turns a config or a
finished run's record into its parts (:mod:`dann.run.build`), callbacks, loggers, launch helpers
(GPU slots, the sweep summary) and speed options."""
