"""Applications built on the library: the UCI small-data benchmark (:mod:`ntkit.apps.uci`), the
demo (:mod:`ntkit.apps.demo`), training-free architecture scores (:mod:`ntkit.apps.nas`) and task
arithmetic in the tangent space (:mod:`ntkit.apps.tangent`).
They import the library; the library never imports them."""
