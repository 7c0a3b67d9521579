-- Which stream the checkpoint belongs to (name and creation time). A stream deleted and created
-- again restarts its sequences at 1: a stored checkpoint from the old stream would silently skip
-- the new stream's first events, so the projector rebuilds when the identity changes.
ALTER TABLE projector_checkpoint ADD COLUMN stream_id text;
