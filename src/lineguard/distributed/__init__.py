"""Scaling out on Ray (the ``ray`` extra): the same inspection and fit, spread over a cluster's workers.

* ``cluster.py`` — joining or starting a cluster, and how a worker rebuilds the scorer (a model folder's bytes
  through the object store, or a test-batch method's name and parameters);
* ``inspect.py`` — Ray Data over groups of image paths, an actor pool whose actors load the scorer once, decode
  on the worker and run the one inspection pipeline (``lineguard.inspect``); rows, maps and masks come back
  encoded for the driver, the results folder's one writer (``io.store``);
* ``fit.py`` — memory-bank fit over shards: features and a coreset per worker, merged on the driver by k-center
  over the union.

Nothing here changes the single-machine path: the same models, results folders, rows and decisions.
"""
