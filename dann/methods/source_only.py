"""Source-only baseline: ``L = CE(G_y(G_f(x_s)), y_s)`` on labelled source data only."""

from dann.methods.base import DAMethod


class SourceOnly(DAMethod):
    def losses(self, batch):
        return {"cls": self.source_ce(batch)}
