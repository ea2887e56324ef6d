-- Outbox slices: relays share the outbox by slice (store::outbox_slices).
--
-- A row's slice is fixed when it is inserted, from its product id, so one product's rows
-- always belong to one slice and one relay at a time: per-product order holds with any
-- number of relays. 64 slices (a power of two, the mask below; OUTBOX_SLICES in Rust).
ALTER TABLE outbox ADD COLUMN slice smallint NOT NULL
    GENERATED ALWAYS AS ((hashtextextended(aggregate_id::text, 0) & 63)::smallint) STORED;

-- A relay claims the pending rows of its slices in id order.
CREATE INDEX outbox_pending_slice ON outbox (slice, id) WHERE published_at IS NULL AND parked_at IS NULL;

-- Who owns each slice, for operators and for takeovers. Exclusive ownership itself is a
-- session advisory lock per slice (it ends with the owner's session); this row tells the
-- next owner whether the previous one let go cleanly (released_at set) or died holding it.
CREATE TABLE outbox_slice_owners (
    slice        smallint PRIMARY KEY CHECK (slice >= 0 AND slice < 64),
    owner        text NOT NULL,
    acquired_at  timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz
);
