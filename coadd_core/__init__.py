"""Pure science layer of the coadd pipeline: images, camera, sky map, simulator and algorithms.

Nothing here imports Prefect, SQL or cloud-storage code; ``registry`` and ``flows`` build on it.
"""
