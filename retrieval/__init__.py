"""Search over a video index: the index on disk (``store``: format, versions, writer, reader),
its thumbnails (``thumbnails``), the first stage (``lists``: centroids, inverted lists,
probing) and how rows are cut into ranges (``ranges``). The exact WTI kernel it calls is the
model's (``models.wti``); nothing here knows of Ray."""
