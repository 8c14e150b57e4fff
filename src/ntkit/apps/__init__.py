"""Applications built on the library: the UCI small-data benchmark (:mod:`ntkit.apps.uci`), the
demo (:mod:`ntkit.apps.demo`), training-free architecture scores (:mod:`ntkit.apps.nas`),
kernel batch active learning (:mod:`ntkit.apps.active`), task arithmetic in the tangent space
(:mod:`ntkit.apps.tangent`), exact permutation learning by NTK ensembles
(:mod:`ntkit.apps.permutation`) and shortcut learning (:mod:`ntkit.apps.shortcut`); the
``_repro_*`` modules hold the computations of the gallery's reproductions.
They import the library; the library never imports them."""
