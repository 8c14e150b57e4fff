"""Applications built on the library: the UCI small-data benchmark (:mod:`ntkit.apps.uci`), the
demo (:mod:`ntkit.apps.demo`) and training-free architecture scores (:mod:`ntkit.apps.nas`).
They import the library; the library never imports them."""
