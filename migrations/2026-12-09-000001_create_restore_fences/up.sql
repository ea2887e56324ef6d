-- One row per `aliexpress post-restore --execute`: the read side brought back to a database
-- restored from backup. `offsets` is where product.events ended when it ran (per partition):
-- what lies before may hold events the restored database never had. `advanced` lists the
-- products sent again past the versions lost with the restore ({"id", "from", "to"});
-- `vanished` the products that have lost events but no longer exist at all, which is why
-- `replay` refuses to move the projection before `offsets` while that list is not empty.
CREATE TABLE restore_fences (
    id            bigserial PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    horizon       timestamptz,
    scanned_from  timestamptz NOT NULL,
    topic         text NOT NULL,
    offsets       jsonb NOT NULL,
    lost_events   integer NOT NULL,
    advanced      jsonb NOT NULL,
    vanished      jsonb NOT NULL,
    actor         text NOT NULL
);
