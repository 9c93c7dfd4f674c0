"""Jobs over whole collections: encoding a folder into an index, resumable (``encode``)."""
