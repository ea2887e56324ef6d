//! Diesel table definitions; mirror of migrations/.

diesel::table! {
    products (id) {
        id -> Uuid,
        sku -> Text,
        title -> Text,
        description -> Text,
        category -> Text,
        brand -> Text,
        attributes -> Jsonb,
        price_minor -> Nullable<Int8>,
        currency -> Nullable<Text>,
        stock -> Int8,
        status -> Text,
        version -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        owner -> Text,
        product_type -> Nullable<Text>,
        category_path -> Jsonb,
        variants -> Nullable<Jsonb>,
        next_variant_id -> Nullable<Int4>,
    }
}

diesel::table! {
    categories (id) {
        id -> Uuid,
        parent_id -> Nullable<Uuid>,
        slug -> Text,
        name -> Text,
        position -> Int4,
        version -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    category_fanouts (id) {
        id -> Int8,
        category_id -> Uuid,
        requested_at -> Timestamptz,
        cursor_id -> Nullable<Uuid>,
        products_done -> Int8,
        done_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    product_types (key) {
        key -> Text,
        name -> Text,
        attributes -> Jsonb,
        version -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    product_skus (sku) {
        sku -> Text,
        product_id -> Uuid,
        variant_id -> Int4,
    }
}

diesel::table! {
    product_history (product_id, version) {
        product_id -> Uuid,
        version -> Int8,
        event_id -> Uuid,
        event_type -> Text,
        occurred_at -> Timestamptz,
        actor -> Nullable<Text>,
        causation_id -> Nullable<Uuid>,
        correlation_id -> Nullable<Uuid>,
        status -> Text,
        changes -> Jsonb,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        event_id -> Uuid,
        aggregate_type -> Text,
        aggregate_id -> Uuid,
        aggregate_version -> Int8,
        topic -> Text,
        key -> Text,
        event_type -> Text,
        schema_version -> Int4,
        payload -> Json,
        headers -> Json,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        next_attempt_at -> Nullable<Timestamptz>,
        parked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    commands (command_id) {
        command_id -> Uuid,
        product_id -> Uuid,
        command_type -> Text,
        status -> Text,
        result_version -> Nullable<Int8>,
        reason -> Nullable<Text>,
        submitted_at -> Timestamptz,
        processed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    replay_audit (id) {
        id -> Int8,
        executed_at -> Timestamptz,
        host -> Text,
        group_id -> Text,
        topic -> Text,
        kafka_partition -> Int4,
        from_offset -> Nullable<Int8>,
        to_offset -> Int8,
        mode -> Text,
        actor -> Nullable<Text>,
    }
}

diesel::table! {
    dlq_redrives (dlq_topic, kafka_partition, dlq_offset) {
        dlq_topic -> Text,
        kafka_partition -> Int4,
        dlq_offset -> Int8,
        target_topic -> Text,
        redriven_at -> Timestamptz,
        actor -> Nullable<Text>,
    }
}

diesel::table! {
    index_rebuilds (id) {
        id -> Int8,
        alias -> Text,
        old_index -> Nullable<Text>,
        new_index -> Text,
        source -> Text,
        host -> Text,
        started_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        status -> Text,
        documents -> Nullable<Int8>,
    }
}

diesel::table! {
    idempotency_keys (principal, route, idempotency_key) {
        principal -> Text,
        route -> Text,
        idempotency_key -> Text,
        request_fingerprint -> Text,
        response_status -> Int2,
        response_headers -> Jsonb,
        response_body -> Jsonb,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Int8,
        name -> Text,
        role -> Text,
        seller -> Nullable<Text>,
        secret_sha256 -> Bytea,
        created_at -> Timestamptz,
        created_by -> Text,
        revoked_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    reconcile_repairs (id) {
        id -> Int8,
        repaired_at -> Timestamptz,
        product_id -> Uuid,
        version -> Int8,
        event_id -> Uuid,
        drift -> Text,
        actor -> Text,
    }
}

diesel::table! {
    restore_fences (id) {
        id -> Int8,
        created_at -> Timestamptz,
        horizon -> Nullable<Timestamptz>,
        scanned_from -> Timestamptz,
        topic -> Text,
        offsets -> Jsonb,
        lost_events -> Int4,
        advanced -> Jsonb,
        vanished -> Jsonb,
        actor -> Text,
    }
}

diesel::table! {
    reconcile_runs (id) {
        id -> Int8,
        ran_at -> Timestamptz,
        host -> Text,
        compared -> Int4,
        absent_from_cache -> Int4,
        drift -> Jsonb,
        examples -> Jsonb,
    }
}
