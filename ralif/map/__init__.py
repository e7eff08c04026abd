"""The map of a project's pool, split by what each part holds:

* :mod:`ralif.map.layout`: the fixed 2-D UMAP layout of the pool's features and its on-disk store;
* :mod:`ralif.map.jobs`: the background jobs that compute it (and the Random reference);
* :mod:`ralif.map.predictions`: the current model's class, confidence and entropy per pool image;
* :mod:`ralif.map.data`: the arrays the map draws and what a lasso selected;
* :mod:`ralif.map.figure`: the plotly figure;
* :mod:`ralif.map.baseline`: the Random reference curve of simulation mode.

:mod:`ralif.projection` re-exports the names the pages use.
"""
