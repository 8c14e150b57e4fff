"""Applications built on the library: the UCI small-data benchmark (:mod:`ntkit.apps.uci`) and
the demo (:mod:`ntkit.apps.demo`). They import the library; the library never imports them."""
