"""Applications built on the library: the UCI small-data benchmark (:mod:`ntkit.apps.uci`), the
demo (:mod:`ntkit.apps.demo`), training-free architecture scores (:mod:`ntkit.apps.nas`) and
kernel batch active learning (:mod:`ntkit.apps.active`).
They import the library; the library never imports them."""
